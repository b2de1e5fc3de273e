"""``interplab bench eval`` on a tiny model: every path is timed on the same samples and the paths agree on what they
scored (interplab's log-likelihoods equal lm-eval's; greedy answers equal Inspect hf/'s)."""

from __future__ import annotations

import pytest
from tiny_tokenized import make_tiny_tokenized_model

import interplab

CHAT_TEMPLATE = (
    "{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def chat_tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_eval")
    m = interplab.load(make_tiny_tokenized_model(d / "src", extra_text=["Yes No It is okay to, isn't it?"]))
    m.tokenizer.chat_template = CHAT_TEMPLATE
    m.save(d / "chat")  # the chat template travels with the tokenizer, for Inspect's hf/ provider too
    return interplab.load(str(d / "chat"))


def test_bench_eval_times_every_path_on_the_same_samples_and_they_agree(chat_tiny, tmp_path):
    from interplab.bench.eval import bench_eval

    res = bench_eval(chat_tiny, n_items=2, rounds=1, batch_size=4, gen_tokens=3, work_dir=tmp_path)
    paths = {"interplab_loglik", "inspect_hf_loglik", "lm_eval_loglik", "interplab_generate", "inspect_hf_generate"}
    assert set(res["items_per_s"]) == paths
    assert all(v > 0 for v in res["items_per_s"].values())
    assert set(res["speedup_vs_inspect_hf"]) == {"loglik", "generate"}
    assert res["max_abs_loglik_diff_vs_lm_eval"] < 1e-4
    assert res["same_greedy_answer_as_hf"] == 1.0
    assert res["n_samples"] == 4
