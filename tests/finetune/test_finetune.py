"""Fine-tuning on the tiny tokenized Llama: LoRA lowers the held-out loss, seeds fix the weights bit for bit, a killed
run resumes to the uninterrupted result, tuned directories (merged, adapter, full) reopen with interplab.load with the
PEFT model's logits, prompt tokens are out of the loss, and bad input is refused with a useful message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import interplab
from interplab.finetune import FinetuneConfig, finetune, heldout_loss, lm_loss, load_data, lora_targets
from interplab.finetune.data import IGNORE
from tests.tiny_tokenized import SENTENCES, make_tiny_tokenized_model

TEXT = " ".join(SENTENCES) + " "
PAIRS = [(f"Q{i}: What is the capital of France?", " The capital of France is Paris.") for i in range(24)]


def small(**kw) -> FinetuneConfig:
    base = {
        "targets": ("q_proj", "v_proj", "o_proj"),
        "rank": 4,
        "alpha": 8,
        "steps": 12,
        "batch_size": 4,
        "seq_len": 24,
        "lr": 2e-2,
        "log_every": 4,
        "ckpt_every": 4,
        "heldout_fraction": 0.2,
        "threads": 1,  # tiny matrices: a second thread only waits, and on a loaded machine it waits long
    }
    return FinetuneConfig(**(base | kw))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """The tiny tokenized Llama with its unembedding scaled up 20x: at the stock scale (std 0.02 over 32 dimensions)
    no residual stream reaches a logit much above 0.6, so adapters inside the blocks could hardly move the loss."""
    d = make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_ft"))
    m = interplab.load(d)
    with torch.no_grad():
        m.hf.lm_head.weight.mul_(20)
    m.hf.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "narrow.txt"
    p.write_text(TEXT * 30)
    return p


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.hf.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def test_lora_lowers_heldout_loss_and_the_seed_fixes_the_weights(tiny, text_file):
    a = finetune(tiny, text_file, small(), progress=False)
    b = finetune(tiny, text_file, small(), progress=False)
    assert a.heldout_loss_after < a.heldout_loss_before - 1.0
    assert_same_weights(weights(a.model), weights(b.model))
    for key in ("step", "heldout_loss", "train_loss_step"):
        assert [m.get(key) for m in a.metrics] == [m.get(key) for m in b.metrics]
    c = finetune(tiny, text_file, small(seed=1), progress=False)
    assert any(not torch.equal(x, y) for x, y in zip(weights(a.model).values(), weights(c.model).values(), strict=True))
    # 2 layers x rank 4 x (in + out) of q (32 -> 32), v (32 -> 16: 2 KV heads of 8) and o (32 -> 32)
    assert a.trainable_params == 2 * 4 * ((32 + 32) + (32 + 16) + (32 + 32))


def test_a_killed_run_resumes_to_the_uninterrupted_weights(tiny, text_file, tmp_path):
    whole = finetune(tiny, text_file, small(), out=tmp_path / "whole", progress=False)

    class Killed(RuntimeError):
        pass

    def kill(step, trainer):
        if step == 6:
            raise Killed

    with pytest.raises(Killed):
        finetune(tiny, text_file, small(), out=tmp_path / "killed", progress=False, callbacks=[kill])
    assert not (tmp_path / "killed" / "finetune.json").exists()
    resumed = finetune(tiny, text_file, small(), out=tmp_path / "killed", resume=True, progress=False)
    assert_same_weights(weights(whole.model), weights(resumed.model))
    assert [m["heldout_loss"] for m in whole.metrics] == [m["heldout_loss"] for m in resumed.metrics]
    assert resumed.tokens_trained == whole.tokens_trained
    with pytest.raises(ValueError, match="already holds a fine-tune"):
        finetune(tiny, text_file, small(), out=tmp_path / "whole", progress=False)


def test_resuming_with_other_settings_is_refused(tiny, text_file, tmp_path):
    def kill(step, trainer):
        if step == 4:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        finetune(tiny, text_file, small(), out=tmp_path / "r", progress=False, callbacks=[kill])
    with pytest.raises(ValueError, match="lr"):
        finetune(tiny, text_file, small(lr=1e-3), out=tmp_path / "r", resume=True, progress=False)


def peft_logits(base_dir: str, adapter_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel

    base = interplab.load(base_dir)
    with torch.no_grad():
        return PeftModel.from_pretrained(base.hf, str(adapter_dir)).eval()(ids).logits


def test_merged_and_adapter_directories_load_with_the_peft_models_logits(tiny, text_file, tmp_path):
    adapter = finetune(tiny, text_file, small(save="adapter"), out=tmp_path / "adapter", progress=False)
    merged = finetune(tiny, text_file, small(save="merged"), out=tmp_path / "merged", progress=False)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "adapter" / "config.json").exists()
    assert (tmp_path / "merged" / "config.json").exists()
    card = json.loads((tmp_path / "adapter" / "finetune.json").read_text())
    assert card["kind"] == "adapter" and card["base"] == str(Path(tiny).resolve())
    ids = interplab.load(tiny).to_tokens(SENTENCES)
    want = peft_logits(tiny, tmp_path / "adapter", ids)
    with torch.no_grad():
        got_merged = interplab.load(str(tmp_path / "merged")).hf(ids).logits
        got_adapter = interplab.load(str(tmp_path / "adapter")).hf(ids).logits
        in_memory = merged.model.hf(ids).logits
    base_logits = interplab.load(tiny).hf(ids).logits.detach()
    assert (want - base_logits).abs().max() > 1e-2  # the adapter changed the model
    # merging adds alpha/r * B A into W: equal up to float rounding on logits of size ~10
    torch.testing.assert_close(got_merged, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_adapter, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(in_memory, want, rtol=1e-4, atol=1e-4)
    assert adapter.heldout_loss_after == merged.heldout_loss_after
    # the result's file reads back
    res = type(merged).load(tmp_path / "merged")
    assert res.heldout_loss_after == merged.heldout_loss_after and res.model is None


def test_an_adapter_whose_base_is_missing_says_which_base_and_how_to_fix_it(tiny, text_file, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny, base)
    finetune(str(base), text_file, small(save="adapter", steps=2), out=tmp_path / "a", progress=False)
    shutil.rmtree(base)
    with pytest.raises(FileNotFoundError, match=r"LoRA adapter for the base model .*base.*finetune\.json"):
        interplab.load(str(tmp_path / "a"))


def test_prompt_tokens_are_out_of_the_loss(tiny):
    model = interplab.load(tiny)
    data = load_data(PAIRS, model, seq_len=48, heldout_fraction=0.25)
    assert data.kind == "pairs" and len(data.heldout) == 6 and len(data.train) == 18
    ids, mask, labels = data.train.batch([0, 1])
    tok = model.tokenizer
    n_prompt = len(tok(PAIRS[0][0], add_special_tokens=False)["input_ids"])
    completion = tok(PAIRS[0][1], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert (labels[0, :n_prompt] == IGNORE).all()
    assert labels[0, n_prompt : n_prompt + len(completion)].tolist() == completion
    # the loss is the mean over completion tokens only, computed from the full logits
    with torch.no_grad():
        loss, n = lm_loss(model.hf, ids, mask, labels)
        logits = model.hf(ids, attention_mask=mask).logits[:, :-1]
    sel = labels[:, 1:] != IGNORE
    assert n == int(sel.sum()) == 2 * len(completion)
    torch.testing.assert_close(loss, F.cross_entropy(logits[sel], labels[:, 1:][sel]))
    # and training on them lowers the held-out completion loss
    res = finetune(model, PAIRS, small(seq_len=48, steps=10, heldout_fraction=0.25), progress=False)
    assert res.heldout_loss_after < res.heldout_loss_before - 1.0
    assert heldout_loss(model.hf, data.heldout) == pytest.approx(
        res.heldout_loss_before
    )  # the input model is untouched


def test_full_finetuning_trains_every_weight_and_reloads(tiny, text_file, tmp_path):
    res = finetune(tiny, text_file, small(method="full", lr=3e-3), out=tmp_path / "full", progress=False)
    base = interplab.load(tiny)
    assert res.trainable_params == base.n_params
    assert res.heldout_loss_after < res.heldout_loss_before - 0.5
    again = interplab.load(str(tmp_path / "full"))
    assert_same_weights(weights(again), weights(res.model))
    assert json.loads((tmp_path / "full" / "finetune.json").read_text())["kind"] == "full"
    assert not (tmp_path / "full" / "checkpoints").exists()


def test_unknown_target_modules_are_refused_with_the_valid_names(tiny, text_file):
    valid = lora_targets(interplab.load(tiny).hf)
    assert valid == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    with pytest.raises(ValueError, match=r"unknown LoRA target module\(s\) \['qkv'\].*down_proj, gate_proj, k_proj"):
        finetune(tiny, text_file, small(targets=("qkv",)), progress=False)
    assert small(targets=("q", "gate")).targets == ("q_proj", "gate_proj")


def test_a_malformed_jsonl_line_is_named_by_its_number(tiny, tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c", "completion": \n')
    with pytest.raises(ValueError, match=r"line 3: not valid JSON"):
        finetune(tiny, p, small(), progress=False)
    p.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n')
    with pytest.raises(ValueError, match=r"line 2: 'completion' must be a string"):
        finetune(tiny, p, small(), progress=False)


def test_jsonl_pairs_and_texts_and_corpus_names_are_read(tiny, tmp_path):
    model = interplab.load(tiny)
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps({"prompt": a, "completion": b}) + "\n" for a, b in PAIRS))
    assert load_data(p, model, seq_len=48).kind == "pairs"
    t = tmp_path / "texts.jsonl"
    t.write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES * 10))
    assert load_data(t, model, seq_len=16).kind == "text"
    d = load_data("corpus:pydoc", model, seq_len=64, heldout_max=4)
    assert d.source == "corpus:pydoc" and len(d.heldout) == 4 and d.train.input_ids.shape[1] == 64
    with pytest.raises(ValueError, match="unknown corpus"):
        load_data("corpus:wiki", model)
    with pytest.raises(FileNotFoundError, match="neither a file nor a built-in corpus"):
        load_data(str(tmp_path / "missing.txt"), model)
    with pytest.raises(ValueError, match="mix plain texts and prompt/completion pairs"):
        load_data(["a text", ("a", "pair")], model)
