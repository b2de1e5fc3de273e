"""Prompt-pair tasks (IOI, facts, small tasks) and causal tracing on a tiny model with a tokenizer."""

from __future__ import annotations

import pytest
import torch
from tiny_tokenized import make_tiny_tokenized_model, task_text

import interplab
from interplab.analyses.causal.tracing import (
    BUCKETS,
    FactTrace,
    TracingResult,
    average_indirect_effect,
    bucket_of,
    causal_tracing,
    draw_resamples,
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


def _planted_trace() -> FactTrace:
    """One fact over 5 layers and 5 tokens (subject at 1..2), p_clean 0.8, p_corrupt 0.1 (total effect 0.7):
    the residual at the last subject token restores 0.4 at layer 1; at the last token it restores 0.02, 0.1,
    0.75, 0.6, 0.7 at layers 0..4 — a jump at layer 2 with an overshoot and a dip after it, as SmolLM2 shows
    (restoring half of 0.7 or more from layer 2 on: the late window is layers 2–4); the MLP window at the last
    subject token restores 0.35 at layer 0, the attention window at the last token 0.5 at layer 2."""
    pc, px = 0.8, 0.1
    eff = {k: torch.full((5, 5), px) for k in ("resid", "mlp", "attn")}
    eff["resid"][1, 2] = px + 0.4
    eff["resid"][:, 4] = px + torch.tensor([0.02, 0.1, 0.75, 0.6, 0.7])
    eff["mlp"][0, 2] = px + 0.35
    eff["attn"][2, 4] = px + 0.5
    return FactTrace("The A B is in", "A B", " X", ["The", " A", " B", " is", " in"], (1, 2), pc, px, eff)


def test_headline_peak_is_at_a_subject_token_and_the_late_last_token_maximum_is_marked_trivial():
    t = _planted_trace()
    res = TracingResult(traces=[t], aie=average_indirect_effect([t]), corruption="noise")
    h = res.headline()
    # the residual's maximum is the last token just after the jump: the answer is already there ...
    o = h["peak_overall"]
    assert (o["component"], o["layer"], o["position"]) == ("resid", 2, "last")
    assert o["aie"] == pytest.approx(0.75) and o["trivial"] is True
    assert h["late_last_token_layers"] == [2, 4]  # 0.75, 0.6, 0.7 ≥ 0.5 × 0.7 > 0.1
    # ... so the headline peak is the residual's over the subject tokens, beside the MLP and attention peaks
    assert (h["peak"]["layer"], h["peak"]["position"]) == (1, "subject_last")
    assert h["peak"]["aie"] == pytest.approx(0.4) and h["peak"]["trivial"] is False
    assert h["peaks"]["resid"] == h["peak"]
    assert (h["peaks"]["mlp"]["layer"], h["peaks"]["mlp"]["position"]) == (0, "subject_last")
    assert (h["peaks"]["attn"]["layer"], h["peaks"]["attn"]["position"]) == (2, "last")
    assert h["total_effect"] == pytest.approx(0.7)
    # an overall maximum outside the window is not trivial
    t.effects["resid"][1, 2] = 0.1 + 0.9
    res = TracingResult(traces=[t], aie=average_indirect_effect([t]), corruption="noise")
    assert res.headline()["peak_overall"]["position"] == "subject_last"
    assert res.headline()["peak_overall"]["trivial"] is False
    # refine reads the MLP and attention peaks over all token classes
    assert res.peak("attn")["position"] == "last" and res.peak("resid", ["last"])["trivial"] is True
    # a corruption that did not lower p(answer) leaves only the last layer in the window
    flat = FactTrace(t.prompt, t.subject, t.answer, t.str_tokens, t.subject_range, 0.1, 0.1, t.effects)
    res = TracingResult(traces=[flat], aie=average_indirect_effect([flat]), corruption="noise")
    assert res.late_last_token_layers() == [4]


def test_headline_peak_on_a_traced_fact_is_at_a_subject_token(tm):
    f = Fact("The {} is located in the city of", "Eiffel Tower", " Paris")
    res = causal_tracing(tm, [f], n_samples=3, window=2)
    h = res.headline()
    assert h["peak"]["component"] == "resid" and h["peak"]["position"] in (
        "subject_first",
        "subject_middle",
        "subject_last",
    )
    L = tm.cfg.n_layers
    assert h["late_last_token_layers"][1] == L - 1
    last = res.peak("resid", ["last"])
    assert last["trivial"] is (last["layer"] >= h["late_last_token_layers"][0])


_FUJI = Fact("{} is the tallest mountain in", "Mount Fuji", " Japan")


def _fits(model, fact: Fact, subject: str) -> bool:
    """An independent check that ``subject`` in place of the fact's keeps the prompt's tokens around it."""
    tok = model.need_tokenizer()
    ids, a, b = subject_span(model, fact.prompt, fact.subject)
    alt = tok(fact.prompt.replace(fact.subject, subject, 1))["input_ids"]
    return len(alt) == len(ids) and alt[:a] == ids[:a] and alt[b + 1 :] == ids[b + 1 :]


def _top1(model, prompt: str) -> int:
    ids = model.need_tokenizer()(prompt)["input_ids"]
    return int(model.run(torch.tensor([ids])).logits[0, -1].argmax())


def test_resample_traces_a_users_fact_with_given_subjects(tm):
    given = ["Kobe Bryant", "France", "Taj Mahal", "Tiger Woods"]
    fits = [s for s in given if _fits(tm, _FUJI, s)]
    assert fits == ["Kobe Bryant", "Taj Mahal", "Tiger Woods"]  # "France" is fewer tokens
    res = causal_tracing(tm, [_FUJI], corruption="resample", n_samples=2, window=2, resample_subjects=given)
    h = res.headline()
    assert h["n_resamples_tried"] == 3 and h["n_resamples_usable"] == 3 and h["n_resamples_used"] == 2
    assert h["resampled_subjects"] == ["Kobe Bryant", "Taj Mahal"]  # the given order
    t = res.traces[0]
    assert t.effects["resid"].shape == (tm.cfg.n_layers, len(t.str_tokens))
    # the corrupted probability is the mean over the two resampled prompts
    ans = tm.first_token_id(" Japan")[0]
    ps = []
    for s in ("Kobe Bryant", "Taj Mahal"):
        ids = tm.need_tokenizer()(_FUJI.prompt.replace("Mount Fuji", s))["input_ids"]
        ps.append(float(tm.run(torch.tensor([ids])).logits[0, -1].softmax(-1)[ans]))
    assert t.p_corrupt == pytest.approx(sum(ps) / 2, rel=1e-4)


def test_resample_falls_back_to_builtin_subjects_of_any_relation(tm):
    res = causal_tracing(tm, [_FUJI], corruption="resample", n_samples=3, window=2)
    h = res.headline()
    subjects = {f.subject: f.template for f in all_facts()}
    expected = [s for s in subjects if _fits(tm, _FUJI, s)]
    assert h["n_resamples_tried"] == len(expected) >= 3 and h["n_resamples_used"] == 3
    used = h["resampled_subjects"]
    assert set(used) <= set(expected)
    assert len({subjects[s] for s in expected}) > 1  # the candidates span relations (none is the fact's own)


def test_resample_drops_subjects_for_which_the_model_still_gives_the_answer(tm):
    cands = ["Kobe Bryant", "Taj Mahal", "Tiger Woods", "Rafael Nadal", "Roger Federer"]
    # the answer is the model's own prediction with "Taj Mahal": that corruption still gives it
    answer = tm.to_str_tokens(torch.tensor([_top1(tm, _FUJI.prompt.replace("Mount Fuji", "Taj Mahal"))]))[0]
    fact = Fact(_FUJI.template, _FUJI.subject, answer)
    still = [s for s in cands if _top1(tm, fact.prompt.replace("Mount Fuji", s)) == tm.first_token_id(answer)[0]]
    assert "Taj Mahal" in still and len(still) < len(cands)
    d = draw_resamples(tm, fact, cands, n_samples=10)
    assert (d.n_candidates, d.n_tried, d.n_usable) == (5, 5, 5 - len(still))
    assert d.subjects == [s for s in cands if s not in still]
    with pytest.raises(ValueError, match=r"still predicts .* for all 1 same-length subject\(s\) tried"):
        draw_resamples(tm, fact, ["Taj Mahal"])


def test_resample_without_a_usable_subject_says_what_to_pass(tm):
    with pytest.raises(ValueError, match=r"'Mount Fuji' is 7 token\(s\).*resample_subjects.*--resample-subjects"):
        causal_tracing(tm, [_FUJI], corruption="resample", resample_subjects=["France", "Peru"])
    with pytest.raises(ValueError, match="only used with corruption='resample'"):
        causal_tracing(tm, [_FUJI], resample_subjects=["Taj Mahal"])


def test_tracing_split_over_worker_processes_equals_the_serial_run(tm, tmp_path):
    """A trace spread over two worker processes (each loading the model from its directory) gives the serial
    result: the same per-fact seeds and noise scale, the same traces, the same average effects."""
    facts = [
        Fact("The capital of {} is the city of", s, a)
        for s, a in [("France", " Paris"), ("Spain", " Madrid"), ("Italy", " Rome")]
    ]
    serial = causal_tracing(tm, facts, n_samples=2, window=2)
    split = causal_tracing(
        tm, facts, n_samples=2, window=2, backend="process", max_parallel=2, checkpoint=tmp_path / "t.jsonl"
    )
    assert [t.to_json() for t in split.traces] == [t.to_json() for t in serial.traces]
    for k in serial.aie:
        assert torch.equal(torch.nan_to_num(split.aie[k]), torch.nan_to_num(serial.aie[k]))
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="use one of serial, process, ray"):
        causal_tracing(tm, facts, backend="spark")
