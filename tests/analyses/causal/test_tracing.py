"""Prompt-pair tasks (IOI, facts, small tasks) and causal tracing on a tiny model with a tokenizer."""

from __future__ import annotations

import pytest
import torch
from tiny_tokenized import make_tiny_tokenized_model, task_text

import interplab
from interplab.analyses.causal.tracing import (
    BUCKETS,
    TracingResult,
    bucket_of,
    causal_tracing,
    subject_span,
    trace_fact,
)
from interplab.tasks import get_task
from interplab.tasks.facts import Fact, all_facts
from interplab.tasks.ioi import BABA_TEMPLATES, _segments, ioi_specs


@pytest.fixture(scope="module")
def tm(tmp_path_factory):
    return interplab.load(
        make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_tok_tracing"), vocab_size=1200, extra_text=task_text())
    )


def test_ioi_segments_follow_wang_et_al():
    segs = _segments(BABA_TEMPLATES[0], "BABA", "Mary", "John", "store", "drink")
    assert "".join(t for t, _ in segs) == "Then, John and Mary went to the store. John gave a drink to"
    assert [n for _, n in segs if n] == ["S1", "IO", "S2"]
    segs = _segments(BABA_TEMPLATES[0], "ABBA", "Mary", "John", "store", "drink")
    assert "".join(t for t, _ in segs) == "Then, Mary and John went to the store. John gave a drink to"
    specs = ioi_specs(["Ann", "Bob", "Cid", "Dan", "Eve", "Fay"], n=10, corruption="abc")
    for s in specs:  # p_ABC: three different names, none of them repeated
        names = [t for t, n in s.corrupt if n]
        assert len(set(names)) == 3
        assert s.answer.strip() in [t for t, n in s.clean if n == "IO"]


def test_tasks_build_on_a_tokenizer_model(tm):
    for name in ("ioi", "pronouns", "capitalisation", "acronyms"):
        pr = get_task(tm, name, n=8)
        assert len(pr) > 0 and pr.clean.shape == pr.corrupt.shape
        end = pr.positions["END"]
        assert (pr.mask[torch.arange(len(pr)), end] == 1).all()
        assert (end == pr.mask.sum(1) - 1).all()
    pr = get_task(tm, "ioi", n=8)
    toks = [tm.to_str_tokens(pr.clean[i]) for i in range(len(pr))]
    for i, t in enumerate(toks):  # the named positions hold the names
        assert t[int(pr.positions["IO"][i])].strip() == pr.meta[i]["io"]
        assert t[int(pr.positions["S2"][i])].strip() == pr.meta[i]["s"]
    with pytest.raises(ValueError, match="unknown task"):
        get_task(tm, "nope")


def test_fact_set_is_large_enough():
    facts = all_facts()
    assert len(facts) >= 100 and all(f.subject in f.prompt for f in facts)


def test_subject_span_and_buckets(tm):
    ids, a, b = subject_span(tm, "The Eiffel Tower is located in the city of", "Eiffel Tower")
    toks = tm.to_str_tokens(torch.tensor(ids))
    assert "".join(toks[a : b + 1]).strip() == "Eiffel Tower"
    assert bucket_of(len(ids) - 1, a, b, len(ids) - 1) == "last"
    assert bucket_of(b, a, b, len(ids) - 1) == "subject_last"
    with pytest.raises(ValueError, match="does not occur"):
        subject_span(tm, "The capital of France is", "Spain")


def test_tracing_exactness(tm):
    f = Fact("The {} is located in the city of", "Eiffel Tower", " Paris")
    t = trace_fact(tm, f, corruption="noise", noise_std=0.05, n_samples=3, window=2)
    a, _b = t.subject_range
    L, P = t.effects["resid"].shape
    # restoring the last layer's output at the last token restores the clean probability exactly
    assert float(t.effects["resid"][L - 1, P - 1]) == pytest.approx(t.p_clean, abs=1e-6)
    # states before the subject are untouched by the corruption (why tracing skips them: IE = 0 there)
    for k in ("resid", "mlp", "attn"):
        assert torch.allclose(t.effects[k][:, :a], torch.full_like(t.effects[k][:, :a], t.p_corrupt), atol=1e-6)
    from interplab.hooks import Apply

    ids = torch.tensor([subject_span(tm, f.prompt, f.subject)[0]])
    noisy = Apply("hook_embed", fn=lambda x, ctx: torch.cat([x[:, :a], x[:, a:] + 1.0], 1))
    names = [f"blocks.{i}.hook_resid_post" for i in range(L)]
    _, c0 = tm.run(ids, cache=names)
    _, c1 = tm.run(ids, cache=names, interventions=[noisy])
    for nm in names:
        assert torch.equal(c0[nm][:, :a], c1[nm][:, :a]) and not torch.equal(c0[nm][:, a:], c1[nm][:, a:])
    # fast and naive agree
    n = trace_fact(tm, f, corruption="noise", noise_std=0.05, n_samples=3, window=2, method="naive")
    for k in t.effects:
        assert torch.allclose(t.effects[k], n.effects[k], atol=1e-5)


def test_tracing_resample_and_result(tm, tmp_path):
    facts = [
        Fact("The capital of {} is the city of", s, a)
        for s, a in [("France", " Paris"), ("Spain", " Madrid"), ("Italy", " Rome"), ("Japan", " Tokyo")]
    ]
    res = causal_tracing(tm, facts, corruption="resample", n_samples=2, window=2)
    assert res.aie["mlp"].shape == (tm.cfg.n_layers, len(BUCKETS))
    assert res.headline()["peak"]["component"] in ("resid", "mlp", "attn")
    res.save(tmp_path)
    back = TracingResult.load(tmp_path)
    assert back.headline() == res.headline()
    assert res.plot().data and res.fact_plot(0).data
    with pytest.raises(ValueError, match="corruption"):
        causal_tracing(tm, facts, corruption="blur")  # pyright: ignore[reportArgumentType]


def test_tracing_checkpoint_resumes(tm, tmp_path, monkeypatch):
    import interplab.analyses.causal.tracing as T

    facts = [Fact("The capital of {} is the city of", s, a) for s, a in [("France", " Paris"), ("Spain", " Madrid")]]
    ck = tmp_path / "traces.jsonl"
    full = causal_tracing(tm, facts, n_samples=2, window=2, checkpoint=ck)
    lines = ck.read_text().splitlines()
    assert len(lines) == 2
    ck.write_text(lines[0] + "\n" + lines[1][:40])  # killed while writing the second fact
    calls = []
    real = T.trace_fact
    monkeypatch.setattr(T, "trace_fact", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = causal_tracing(tm, facts, n_samples=2, window=2, checkpoint=ck)
    assert len(calls) == 1  # only the unfinished fact was recomputed
    for k in full.aie:
        assert torch.allclose(full.aie[k], again.aie[k], equal_nan=True)


def test_cli_patch_ioi_and_bench_on_tiny(tm, tmp_path):
    import json

    from typer.testing import CliRunner

    from interplab.cli import app

    d = str(tmp_path / "model")
    tm.save(d)
    run = CliRunner()
    r = run.invoke(
        app,
        [
            "patch",
            "ioi",
            "--model",
            d,
            "--grid",
            "heads",
            "--position",
            "END",
            "--n",
            "6",
            "--attribution",
            "--json",
            "--out",
            str(tmp_path / "p"),
        ],
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["grid"] == "heads" and -1 <= h["attribution_corr"] <= 1 and (tmp_path / "p" / "report.html").exists()
    r = run.invoke(app, ["ioi", "--model", d, "--n", "6", "--json", "--out", str(tmp_path / "i")])
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    for k in ("logit_diff_mean", "io_preferred_frac", "heads", "circuit"):
        assert k in h
    assert set(h["heads"]) >= {"name_movers", "s_inhibition", "induction", "duplicate_token", "previous_token"}
    assert "faithfulness" in h["circuit"] and isinstance(h["circuit"]["heads"], list)
    html = (tmp_path / "i" / "report.html").read_text()
    assert "Circuit" in html
    from interplab.analyses.causal import IOIResult, PatchingResult

    back = IOIResult.load(tmp_path / "i")  # ioi.json with circuit.json and patching_heads_end.json beside it
    assert back.circuit is not None and back.patching is not None
    assert {k: h[k] for k in back.headline()} == back.headline()
    assert PatchingResult.load(tmp_path / "p" / "attribution.json").method == "attribution"
    r = run.invoke(app, ["bench", "patching", "--model", d, "--n", "4", "--json", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["max_abs_diff"] <= 1e-4 and h["cells"] == tm.cfg.n_layers * tm.cfg.n_heads
    for k in ("naive_s", "fast_s", "speedup", "attribution_s", "attribution_corr"):
        assert k in h
    r = run.invoke(app, ["patch", "ioi", "--model", d, "--grid", "bogus"])
    assert r.exit_code == 2 and "grid must be" in r.output
