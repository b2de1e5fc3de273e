"""Toy models of superposition (Elhage et al. 2022): measures on planted geometries, and a shortened intro
sweep that reproduces the paper's pentagon (5 features in 2 dimensions, D_i = 2/5, 72 degrees) at high
sparsity and two orthogonal features when dense."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from interplab.train import superposition as S


def _polygon(k: int, n: int | None = None) -> torch.Tensor:
    th = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return torch.stack([th.cos(), th.sin()], 1)


def test_measures_on_planted_geometry():
    pent = _polygon(5)[None]  # [1, 5, 2]
    torch.testing.assert_close(S.feature_dimensionality(pent), torch.full((1, 5), 0.4, dtype=torch.float64))
    assert S.polygon_angles(pent[0]) == pytest.approx([72.0] * 5)
    torch.testing.assert_close(S.d_star(pent), torch.tensor([0.4], dtype=torch.float64))
    anti = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]]])
    torch.testing.assert_close(
        S.feature_dimensionality(anti), torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.0]], dtype=torch.float64)
    )
    ortho = torch.eye(2)[None]
    torch.testing.assert_close(S.feature_dimensionality(ortho), torch.ones(1, 2, dtype=torch.float64))
    torch.testing.assert_close(S.superposition_score(ortho), torch.zeros(1, 2, dtype=torch.float64))
    W = torch.tensor([[[1.0], [0.0]], [[0.0], [1.0]], [[1.0], [-1.0]], [[0.1], [0.0]], [[-0.6], [-0.8]]])
    assert S.classify_phase(W) == ["feature 1 only", "feature 2 only", "superposition", "none", "both, same sign"]


@pytest.fixture(scope="module")
def intro_run(tmp_path_factory):
    from interplab.cli import app

    out = tmp_path_factory.mktemp("sup")
    r = CliRunner().invoke(
        app,
        [
            "train",
            "superposition",
            "--set",
            "parts=intro",
            "--set",
            "steps=2000",
            "--set",
            "lr=1e-2",
            "--set",
            "log_every=500",
            "--out",
            str(out),
            "--json",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


def test_intro_sweep_pentagon_at_high_sparsity(intro_run):
    out, h = intro_run
    sparse = h["intro_highest_sparsity"]
    assert sparse["feature_probability"] == pytest.approx(0.01)
    assert min(sparse["feature_norms"]) > 0.5  # all five features represented
    assert sparse["feature_dimensionality"] == pytest.approx([0.4] * 5, abs=0.03)
    assert sorted(sparse["angles_deg"]) == pytest.approx([72.0] * 5, abs=5.0)
    res = S.SuperpositionResult.load(out)
    a = res.parts["intro"]
    assert len(a["feature_probability"]) == 12 and a["feature_probability"][:10] == pytest.approx(
        (20.0 ** -torch.linspace(0, 1, 10, dtype=torch.float64)).tolist()
    )
    # dense (1-S = 1): the two most important features get orthogonal dimensions, the rest are dropped
    assert a["feature_dimensionality"][0][:2] == pytest.approx([1.0, 1.0], abs=0.02)
    assert max(a["feature_norms"][0][2:]) < 0.1
    assert a["d_star"][0] == pytest.approx(1.0, abs=0.02)
    assert (out / "report.html").exists() and (out / "intro" / "model.safetensors").exists()


def test_superposition_resume_skips_finished_parts(intro_run):
    out, h = intro_run
    cfg = S.SuperpositionConfig(parts=("intro",), steps=2000, lr=1e-2, log_every=500)
    res = S.train(cfg, out, resume=True, progress=False)
    assert res.headline()["intro_highest_sparsity"] == h["intro_highest_sparsity"]


def test_geometry_d_star_sticks_at_one_half(tmp_path):
    """Elhage et al.'s "sticky" D* = 1/2 (antipodal pairs) over a range of sparsities, then a drop to
    triangles (1/3): 200 features in 20 dimensions, a shortened version of their geometry sweep."""
    cfg = S.SuperpositionConfig(
        parts=("geometry",),
        steps=1000,
        lr=1e-2,
        batch=512,
        log_every=500,
        threads=1,
        geometry_probabilities=(0.45, 0.39, 0.33, 0.28, 0.18),
    )
    res = S.train(cfg, tmp_path / "geo", progress=False)
    d = list(res.headline()["d_star"].values())
    assert all(abs(x - 0.5) < 0.05 for x in d[:4]), d  # the plateau at 1/2 across 1-S = 0.45 ... 0.28
    assert d[4] < 0.4, d  # sparser: below the plateau
    clusters = list(res.headline()["feature_dimensionality_clusters"].values())
    for c in clusters[:4]:
        assert c["represented"] >= 36 and c["1/2"] >= 0.9 * c["represented"], c  # ~19 antipodal pairs in 20 dims
    assert clusters[4]["1/3"] + clusters[4]["3/8"] >= 0.8 * clusters[4]["represented"], clusters[4]
