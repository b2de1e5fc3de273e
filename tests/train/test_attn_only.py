"""Attention-only transformers (Olsson et al. 2022): trained on repeated subsequences with varied source and
offset, a 2-layer model (no LayerNorm, the default) forms classic induction heads — layer-1 heads attend
from a second-copy token to the token after its earlier occurrence (score ~0.8) fed by a layer-0
previous-token head — and learns to copy (loss on the repeated half of the probe < 1 nat, phase change
at ~600-750 steps), while a 1-layer model does neither. One test of both models, 900 steps each."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

import interplab
from interplab.train import attn_only as I


def test_synthetic_data_has_one_varied_offset_repeat():
    cfg = I.AttnOnlyConfig(n_ctx=64, synthetic_vocab=256)
    x = I.synthetic(64, cfg, torch.Generator().manual_seed(0))
    offsets = set()
    for row in x:
        # find the copied segment: positions j where row[j] == row[j - d] for a run of >= n/8 tokens
        for d in range(8, 64):
            eq = (row[d:] == row[:-d]).int()
            if eq.sum() >= 8:
                offsets.add(d)
                break
    assert len(offsets) > 10  # many different offsets, so no positional shortcut
    probe = I.repeated_probe(4, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(probe[:, :32], probe[:, 32:])


def test_icl_score_definition():
    pos_loss = torch.ones(2, 63)
    pos_loss[:, 47:] = 0.25  # targets at positions 48.. (late) are easier
    assert I.icl_score(pos_loss) == -0.75


def test_2l_forms_induction_head_and_1l_does_not(tmp_path):
    from interplab.cli import app

    out = tmp_path / "attn"
    args = [
        "train",
        "attn-only",
        "--layers",
        "1..2",
        "--set",
        "data=synthetic",
        "--set",
        "n_ctx=32",
        "--set",
        "synthetic_vocab=64",
        "--set",
        "steps=900",
        "--set",
        "batch=128",
        "--set",
        "lr=1e-2",
        "--set",
        "warmup=50",
        "--set",
        "log_every=450",
        "--set",
        "eval_seqs=8",
        "--out",
        str(out),
        "--json",
        "--no-progress",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    for key in ("final_loss", "icl_score", "max_induction_score"):
        assert set(h[key]) == {"1L", "2L"}
    s1, _ = h["max_induction_score"]["1L"]
    assert s1 < 0.3, h["max_induction_score"]
    s2, (layer, _) = h["max_induction_score"]["2L"]
    assert s2 > 0.5 and layer == 1, h["max_induction_score"]  # a classic induction head in layer 1
    assert h["max_prev_token_score"]["2L"] > 0.4  # ... composed with a previous-token head
    assert (
        h["max_attention_by_offset"]["2L"]["0"] == round(s2, 4)
        or abs(h["max_attention_by_offset"]["2L"]["0"] - s2) < 0.1
    )
    assert h["synthetic_loss_second_half"]["2L"] < 1.0 and h["synthetic_loss_second_half"]["1L"] > 1.5
    assert h["icl_score"]["2L"] < h["icl_score"]["1L"] < 0
    res = I.AttnOnlyResult.load(out)
    comp = res.models["2L"]["composition_top"]["K"][0]  # strongest K-composition: a layer-0 head into layer 1
    assert comp[0] == 0 and comp[2] == 1 and comp[5] > 3
    m = interplab.load(str(out / "L2"))
    assert m.cfg.n_layers == 2 and m.cfg.d_mlp == 0
    assert (out / "report.html").exists()


def test_offset_profile_on_the_planted_induction_circuit():
    """Planted ground truth: head (1, 0) attends from i to the token after i's earlier occurrence (k = 0)."""
    from interplab.models.planted import induction_model
    from interplab.models.toy import ToyTransformer

    m = induction_model(d_vocab=64, n_ctx=48)
    assert isinstance(m.hf, ToyTransformer)
    prof = I.induction_offset_profile(m.hf, I.AttnOnlyConfig(n_ctx=48, synthetic_vocab=64))
    assert prof.shape == (2, 2, len(I.OFFSETS))
    k0 = I.OFFSETS.index(0)
    assert prof[1, 0, k0] > 0.9 and int(prof[1, 0].argmax()) == k0
    assert prof[1, 0].sum() - prof[1, 0, k0] < 0.1  # nothing at the duplicate token or shifted keys
    assert prof[0, :, k0].max() < 0.2  # the previous-token head does not look there
