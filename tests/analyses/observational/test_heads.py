"""Head detectors (interplab.analyses.observational.heads): planted ground truth, agreement with TransformerLens's
``head_detector`` on the same attention patterns, every model family, the Result API, the CLI, and
the real SmolLM2-135M (integration)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import interplab
from interplab.analyses.observational.heads import (
    CLASSES,
    HeadScores,
    deranged,
    head_inputs,
    head_scores,
    repeated_pattern_scores,
    text_pattern_scores,
)
from interplab.analyses.weights import eigenvalue_copying, head_circuits
from interplab.cli import app
from interplab.models.planted import (
    ANTI_COPYING_HEAD,
    COPYING_HEAD,
    INDUCTION_HEAD,
    PREV_TOKEN_HEAD,
    PSD_HEAD,
    copying_model,
    induction_model,
)

PLANTED_KW: dict[str, Any] = {"n_seqs": 16, "batch": 8, "seq_len": 20}


@pytest.fixture(scope="module")
def planted():
    return induction_model()


@pytest.fixture(scope="module")
def planted_res(planted):
    return head_scores(planted, **PLANTED_KW)


# ------------------------------------------------------------------------------------ planted ground truth
def test_planted_heads_are_singled_out(planted_res):
    res = planted_res
    pl, ph = PREV_TOKEN_HEAD
    il, ih = INDUCTION_HEAD
    assert [(a, b) for a, b, _ in res.members("previous_token")] == [PREV_TOKEN_HEAD]
    assert [(a, b) for a, b, _ in res.members("induction")] == [INDUCTION_HEAD]
    assert res.members("duplicate_token") == [] and res.members("sink") == []
    # scores near 1, null baselines far below
    assert res.scores["previous_token"][pl, ph] > 0.99 and res.baselines["previous_token"][pl, ph] < 0.01
    assert res.scores["induction"][il, ih] > 0.9 and res.baselines["induction"][il, ih] < 0.05
    # the planted heads are not what the other classes look for
    assert res.scores["induction"][pl, ph] < 0.05 and res.scores["previous_token"][il, ih] < 0.2
    # every other head is near uniform: far below threshold on every attention class
    for c in ("previous_token", "duplicate_token", "induction", "sink"):
        others = res.scores[c].clone()
        others[pl, ph] = others[il, ih] = 0
        assert others.max() < 0.15, (c, others)
    # copying (own token in the top k of the OV output through embed/unembed): the induction head copies the
    # attended token; the null (random heads' level, ~k / vocab = 10 / 64 here) stays far below
    assert res.scores["copying"][il, ih] == 1.0 and res.baselines["copying"][il, ih] < 0.5
    assert (il, ih) in [(a, b) for a, b, _ in res.members("copying")]
    assert res.members("copy_suppression") == []
    hl = res.headline()
    assert hl["induction"][0][:2] == list(INDUCTION_HEAD) and hl["previous_token"][0][:2] == list(PREV_TOKEN_HEAD)
    assert hl["null_baseline"]["induction"][0][:2] == list(INDUCTION_HEAD)
    assert res.to_frame("wide").set_index(["layer", "head"])["olsson_induction"].to_dict() == {
        (0, 0): False,
        (0, 1): False,
        (1, 0): True,
        (1, 1): False,
    }


def test_planted_copy_suppression_when_ov_is_negated():
    """Flip the sign of the induction head's output: it still attends the same way (layer 1's patterns do
    not depend on its own W_O) but now lowers the logit of the token it attends to."""
    m = induction_model()
    il, ih = INDUCTION_HEAD
    e = m.cfg.d_head
    with torch.no_grad():
        m.hf.blocks[il].attn.o_proj.weight[:, ih * e : (ih + 1) * e] *= -1
    res = head_scores(m, **PLANTED_KW)
    assert [(a, b) for a, b, _ in res.members("copy_suppression")] == [INDUCTION_HEAD]
    assert (il, ih) not in [(a, b) for a, b, _ in res.members("copying")]
    assert res.scores["copy_suppression"][il, ih] == 1.0 and res.scores["copying"][il, ih] == 0.0
    assert res.reference["copying_eigenvalue_ratio"][il, ih] < -0.99
    assert [(a, b) for a, b, _ in res.members("induction")] == [INDUCTION_HEAD]


def test_planted_copying_classes_and_one_score_for_both_users():
    """The planted copying model (one W_OV = I head, one W_OV = -I head, one rank-1 positive semi-definite head
    and random heads, tied embeddings): only the planted heads are members, and the head detector reports the
    same copying score as the weights analysis. Elhage et al.'s eigenvalue ratio, kept as a reference, would have
    made the PSD head a copying member too (ratio 1, like the true copier)."""
    m = copying_model()
    res = head_scores(m, n_seqs=2, batch=2, seq_len=8, text_len=16, copying_tokens=256)
    assert [(a, b) for a, b, _ in res.members("copying")] == [COPYING_HEAD]
    assert [(a, b) for a, b, _ in res.members("copy_suppression")] == [ANTI_COPYING_HEAD]
    for c, head in (("copying", COPYING_HEAD), ("copy_suppression", ANTI_COPYING_HEAD)):
        others = res.scores[c].clone()
        others[head] = 0
        assert res.scores[c][head] > 0.99 and others.max() < 0.1 and res.baselines[c].max() < 0.1
    ratio = res.reference["copying_eigenvalue_ratio"]
    assert ratio[PSD_HEAD] > 0.99 and ratio[COPYING_HEAD] > 0.99
    torch.testing.assert_close(ratio, eigenvalue_copying(m, center_unembed=True))
    circ = head_circuits(m, n_directions=1, top_k=2, copying_tokens=256)
    assert torch.equal(circ.copying, res.scores["copying"])
    assert torch.equal(circ.copy_suppression, res.scores["copy_suppression"])
    assert circ.null_max == {c: float(res.baselines[c][0, 0]) for c in ("copying", "copy_suppression")}
    assert [m[:2] for m in circ.members("copying")] == [list(COPYING_HEAD)]
    assert [m[:2] for m in circ.members("copy_suppression")] == [list(ANTI_COPYING_HEAD)]
    assert res.settings["copying_tokens"] == 256 and res.settings["copying_k"] == 10


def test_deranged_null_input():
    tokens = torch.arange(2 * 12).view(2, 12).repeat(1, 2)  # two rows of 12 distinct tokens, repeated
    tokens = torch.cat([torch.full((2, 1), 99), tokens], 1)  # a BOS-like first token
    null = deranged(tokens, 12, offset=1, seed=3)
    assert torch.equal(null[:, :13], tokens[:, :13])
    for b in range(2):
        assert sorted(null[b, 13:].tolist()) == sorted(tokens[b, 13:].tolist())
        assert not (null[b, 13:] == tokens[b, 13:]).any()  # no token at its aligned position


def test_pattern_score_definitions_on_hand_made_patterns():
    """The scores read exactly the documented cells of a hand-written pattern."""
    L, o = 5, 1
    n = o + 2 * L
    p = torch.zeros(1, 3, n, n)
    for i in range(n):
        p[0, 0, i, max(i - 1, 0)] = 1  # previous token
        p[0, 1, i, 0] = 1  # sink
        p[0, 2, i, i - L + 1 if i >= o + L else i] = 1  # induction
    r = repeated_pattern_scores(p, L, o)
    t = text_pattern_scores(p, o)
    assert r["induction"].tolist() == [[0.0, 0.0, 1.0]] and r["duplicate_token"].tolist() == [[0.0, 0.0, 0.0]]
    assert t["previous_token"][0, 0] == 1 and t["sink"][0, 1] == 1
    assert t["previous_token_null"][0, 0] == 0 and t["sink_null"][0, 1] == 0
    u = torch.tril(torch.ones(n, n))
    u = (u / u.sum(-1, keepdim=True))[None, None]  # uniform causal attention: null == score in expectation
    tu = text_pattern_scores(u, 0)
    rows = torch.arange(3, n)
    assert torch.isclose(tu["previous_token_null"][0, 0], (1 / (rows + 1.0)).mean())


# ------------------------------------------------------------------------------------ TransformerLens
def _tl_scores(model, tokens, kind, offset_rows):
    """Per-head TransformerLens head_detector scores (error_measure="mul", no exclusions), averaged over
    sequences, rescaled from TL's 1/n to our 1/|R| row average."""
    from transformer_lens.head_detector import (
        compute_head_attention_similarity_score,
        get_duplicate_token_head_detection_pattern,
        get_induction_head_detection_pattern,
        get_previous_token_head_detection_pattern,
    )

    get = {
        "previous_token": get_previous_token_head_detection_pattern,
        "induction": get_induction_head_detection_pattern,
        "duplicate_token": get_duplicate_token_head_detection_pattern,
    }[kind]
    cfg = model.cfg
    _, cache = model.run(tokens, cache=lambda name: name.endswith("attn.hook_pattern"))
    out = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
    for b in range(tokens.shape[0]):
        det = get(tokens[b : b + 1].cpu())
        n, n_rows = det.shape[0], int((det.sum(-1) > 0).sum())
        assert n_rows == offset_rows
        for layer in range(cfg.n_layers):
            pat = cache[f"blocks.{layer}.attn.hook_pattern"][b].float()
            for h in range(cfg.n_heads):
                s = compute_head_attention_similarity_score(
                    pat[h], det, exclude_bos=False, exclude_current_token=False, error_measure="mul"
                )
                out[layer, h] += s * n / n_rows
    return (out / tokens.shape[0]).float()


@pytest.mark.parametrize("which", ["planted", "llama", "gpt2"])
def test_matches_transformer_lens_head_detector(which, planted, planted_res, tiny_dirs):
    pytest.importorskip("transformer_lens")
    if which == "planted":
        model, res, kw = planted, planted_res, PLANTED_KW
    else:  # random weights: diffuse patterns, so every cell matters
        model = interplab.load(tiny_dirs[which])
        kw: dict[str, Any] = {"n_seqs": 4, "batch": 2, "seq_len": 12, "text_len": 24}
        res = head_scores(model, copying=False, **kw)
    inp = head_inputs(model, **{k: v for k, v in kw.items() if k != "batch"})
    assert inp["offset"] == 0 and inp["text_offset"] == 0  # no BOS: the definitions coincide exactly
    L = inp["seq_len"]
    for kind, tokens, rows in [
        ("induction", inp["repeated"], L),
        ("duplicate_token", inp["repeated"], L),
        ("previous_token", inp["text"], inp["text_len"] - 1),
    ]:
        tl = _tl_scores(model, tokens, kind, rows)
        torch.testing.assert_close(res.scores[kind], tl, atol=1e-5, rtol=0, msg=f"{which} {kind}")


# ------------------------------------------------------------------------------------ every family, API, CLI
def test_every_family(tiny):
    res = head_scores(tiny, n_seqs=3, batch=2, seq_len=8, text_len=16, n_null_rotations=2)
    L, H = tiny.cfg.n_layers, tiny.cfg.n_heads
    assert res.classes == list(CLASSES)
    for c in CLASSES:
        s, b = res.scores[c], res.baselines[c]
        assert s.shape == b.shape == (L, H) and torch.isfinite(s).all() and torch.isfinite(b).all()
        assert s.min() >= 0 and s.max() <= 1 + 1e-6
    # a token cannot be both in the top and the bottom k of its row (vocab > 2k)
    assert (res.scores["copy_suppression"] + res.scores["copying"]).max() <= 1 + 1e-6
    assert res.reference["copying_eigenvalue_ratio"].abs().max() <= 1 + 1e-6
    assert res.stderr["induction"].shape == (L, H)


def test_result_api_and_roundtrip(planted_res, tmp_path):
    res = planted_res
    long = res.to_frame()
    assert len(long) == len(CLASSES) * res.n_layers * res.n_heads
    assert {"layer", "head", "class", "score", "baseline", "stderr", "threshold", "member"} <= set(long.columns)
    assert long["member"].sum() == sum(len(res.members(c)) for c in CLASSES)
    wide = res.to_frame("wide")
    assert len(wide) == res.n_layers * res.n_heads and "induction_baseline" in wide and "sink_member" in wide
    fig = res.plot()
    assert sum(t.type == "heatmap" for t in fig.data) == len(CLASSES)
    path = res.save(tmp_path)
    raw = path.read_text()
    assert "NaN" not in raw and json.loads(raw)["headline"] == json.loads(json.dumps(res.headline()))
    back = HeadScores.load(tmp_path)
    assert back.headline() == res.headline() and back.settings == res.settings
    for c in CLASSES:
        torch.testing.assert_close(back.scores[c], res.scores[c])
    for c, entries in res.headline().items():
        if c == "null_baseline":
            continue
        assert all(isinstance(a, int) and isinstance(b, int) and isinstance(s, float) for a, b, s in entries)
        assert [s for *_, s in entries] == sorted((s for *_, s in entries), reverse=True)
    # a stricter rule leaves fewer members; thresholds are per class and validated
    strict = HeadScores(
        res.scores, res.baselines, res.stderr, thresholds={**res.thresholds, "induction": 0.99}, margins=res.margins
    )
    assert strict.members("induction") == []
    with pytest.raises(ValueError, match="unknown classes"):
        head_scores(induction_model(), thresholds={"inductoin": 0.5})
    with pytest.raises(ValueError, match="unknown head class"):
        res.members("successor")


def test_text_needs_tokenizer(planted):
    with pytest.raises(ValueError, match="no tokenizer"):
        head_inputs(planted, text="pydoc")


def test_cli_heads_on_planted_model(tmp_path):
    d = tmp_path / "planted"
    induction_model().save(d)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        app,
        ["heads", "--model", str(d), "--json", "--out", str(out), "--seq-len", "20", "--n-seqs", "8", "--batch", "4"],
    )
    assert r.exit_code == 0, r.output
    hl = json.loads(r.stdout)
    assert [e[:2] for e in hl["induction"]] == [list(INDUCTION_HEAD)]
    assert [e[:2] for e in hl["previous_token"]] == [list(PREV_TOKEN_HEAD)]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["arguments"]["seq_len"] == 20
    assert {"heads.json", "heads.parquet", "report.html"} <= {p.name for p in out.iterdir()}
    assert HeadScores.load(out).headline()["induction"] == hl["induction"]
    bad = CliRunner().invoke(app, ["heads", "--model", str(d), "--seq-len", "40", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "n_ctx" in bad.output


# ------------------------------------------------------------------------------------ SmolLM2
