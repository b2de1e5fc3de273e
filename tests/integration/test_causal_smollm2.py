"""Integration: IOI, facts, patching and tracing on the real SmolLM2-135M."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from interplab.analyses.causal import activation_patching, attribution_patching, correlation
from interplab.analyses.causal.ablation import compare_induction_ablation, induction_scores
from interplab.tasks import get_task
from interplab.tasks.ioi import ioi, single_token_names

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ioi_pairs(smollm2):
    return ioi(smollm2, n=16, seed=0)


def test_ioi_task_on_smollm2(smollm2, ioi_pairs):
    assert len(single_token_names(smollm2)) >= 30
    pr = ioi_pairs
    with torch.no_grad():
        ld = pr.metric_from_logits(smollm2.run(pr.clean, attention_mask=pr.run_mask()).logits)
        ldx = pr.metric_from_logits(smollm2.run(pr.corrupt, attention_mask=pr.run_mask()).logits)
    assert (ld > 0).float().mean() >= 0.8  # the model prefers IO (measured: 0.98 on 40 pairs)
    assert ld.mean() > 2.0 and ldx.abs().mean() < ld.mean() / 2  # p_ABC carries no IO information


def test_heads_patching_fast_equals_naive_and_attribution(smollm2, ioi_pairs):
    pr = ioi_pairs.head(6)
    f = activation_patching(smollm2, pr, grid="heads", position="END", layers=[20, 23, 24], n_boot=50)
    n = activation_patching(smollm2, pr, grid="heads", position="END", layers=[20, 23, 24], method="naive", n_boot=50)
    assert (f.per_prompt - n.per_prompt).abs().max() <= 1e-3  # logit units (~5); normalised below
    assert (f.values - n.values).abs().max() <= 1e-4
    a = attribution_patching(smollm2, pr, grid="heads", position="END", layers=[20, 23, 24], n_boot=50)
    assert correlation(a, f) > 0.8


def test_small_tasks_and_facts_on_smollm2(smollm2):
    for name in ("pronouns", "capitalisation", "acronyms", "facts"):
        pr = get_task(smollm2, name, n=12)
        with torch.no_grad():
            m = pr.metric_from_logits(smollm2.run(pr.clean, attention_mask=pr.run_mask()).logits)
        assert (m > 0).float().mean() >= 0.7, name


def test_cli_trace_one_fact(tmp_path):

    from interplab.cli import app

    r = CliRunner().invoke(
        app,
        [
            "trace",
            "--prompt",
            "The Eiffel Tower is located in the city of",
            "--subject",
            "Eiffel Tower",
            "--answer",
            " Paris",
            "--samples",
            "3",
            "--no-refine",
            "--json",
            "--out",
            str(tmp_path / "t"),
        ],
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["peak"]["component"] in ("resid", "mlp", "attn") and h["p_clean_mean"] > h["p_corrupt_mean"]
    # the headline peak is the residual stream at a subject token; the late last-token window ends at the top
    assert h["peak"]["position"] in ("subject_first", "subject_middle", "subject_last")
    assert h["late_last_token_layers"][1] == 29 and "trivial" in h["peak_overall"]
    assert (tmp_path / "t" / "report.html").exists()
    r = CliRunner().invoke(app, ["trace", "--prompt", "The Eiffel Tower", "--subject", "Louvre", "--answer", " Paris"])
    assert r.exit_code == 2 and "does not occur" in r.output


def test_trace_a_users_fact_by_resampling_builtin_subjects_on_smollm2(smollm2):
    """Issue 12: "Mount Fuji is the tallest mountain in" → " Japan" is no built-in relation; resampling draws
    built-in subjects of the same token length from any relation, keeps those after which SmolLM2 no longer
    predicts " Japan", and the headline peak is the residual stream at a subject token, while the overall
    maximum (the last token, late) is marked trivial."""
    from interplab.analyses.causal.tracing import SUBJECT_BUCKETS, causal_tracing
    from interplab.tasks.facts import Fact

    f = Fact("{} is the tallest mountain in", "Mount Fuji", " Japan")
    res = causal_tracing(smollm2, [f], corruption="resample", n_samples=5, kinds=("resid",))
    h = res.headline()
    assert h["n_resamples_usable"] >= h["n_resamples_used"] == 5 and h["n_resamples_tried"] >= 5
    assert h["p_clean_mean"] > 10 * h["p_corrupt_mean"]  # measured: 0.121 vs 0.003 (10 subjects)
    assert h["peak"]["position"] in SUBJECT_BUCKETS and h["peak"]["aie"] > 0.2 * h["total_effect"]
    o = h["peak_overall"]
    assert (o["component"], o["position"], o["trivial"]) == ("resid", "last", True)
    assert h["late_last_token_layers"][1] == smollm2.cfg.n_layers - 1


@pytest.mark.integration
def test_smollm2_induction_heads_matter_more_than_random(smollm2):
    """The issue's check, < 90 s on 2 cores: ablating SmolLM2's top-5 induction heads (by the heads.py
    induction score) raises the loss on the second half of repeated random sequences far more than
    ablating 5 random heads."""
    score, _null, member = induction_scores(smollm2, n_seqs=4, batch=4)
    top = torch.topk(score.flatten(), 5).indices.tolist()
    heads = [(i // 9, i % 9) for i in top]
    assert all(member[h] for h in heads)
    c = compare_induction_ablation(smollm2, heads, n_random=5, batch=4, seq_len=32, how="mean", seed=0)
    print(c.headline())
    assert c.induction_increase > 2.0
    assert c.induction_increase > 3 * float(c.random_increases.max())
