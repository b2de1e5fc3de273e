"""Integrated gradients (Sundararajan et al. 2017) over token embeddings: equal to Captum's IntegratedGradients on
the same function, complete within tolerance, and refused the name when the quadrature has not converged."""

from __future__ import annotations

import pytest
import torch
from tiny_tokenized import make_tiny_tokenized_model, task_text

import interplab
from interplab.analyses.observational.integrated_gradients import integrated_gradients, quadrature

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def tm(tmp_path_factory):
    m = interplab.load(make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_ig"), extra_text=task_text()))
    assert m.first_token_id(" Mary")[0] != m.first_token_id(" John")[0]  # names are single tokens
    return m


def test_quadrature_integrates_polynomials():
    for method, n in (("gausslegendre", 5), ("trapezoid", 2001)):
        a, w = quadrature(n, method)  # type: ignore[arg-type]
        assert float(w.sum()) == pytest.approx(1.0)
        assert float((w * a**3).sum()) == pytest.approx(0.25, abs=1e-6)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_attributions_equal_captums(tm, method):
    from captum.attr import IntegratedGradients

    ours_method = "trapezoid" if method == "riemann_trapezoid" else method
    res = integrated_gradients(tm, PROMPT, " Mary", " John", keep_bos=False, n_steps=40, method=ours_method)
    tokens = tm.to_tokens(PROMPT)
    a, w = tm.first_token_id(" Mary")[0], tm.first_token_id(" John")[0]
    x = tm.hf.get_input_embeddings()(tokens).detach()

    def f(emb: torch.Tensor) -> torch.Tensor:
        logits = tm.hf(inputs_embeds=emb).logits
        return logits[:, -1, a] - logits[:, -1, w]

    theirs, delta = IntegratedGradients(f).attribute(
        x, baselines=torch.zeros_like(x), n_steps=40, method=method, return_convergence_delta=True
    )
    assert abs(res.f_input - res.f_baseline) > 1e-3 and float(res.attributions.abs().max()) > 1e-3
    # Captum's trapezoid weights are 1/n (halved at the ends), summing to (n - 1)/n rather than 1; ours sum to 1
    scale = 40 / 39 if method == "riemann_trapezoid" else 1.0
    assert torch.allclose(res.attributions, scale * theirs[0].sum(-1).float(), rtol=1e-4, atol=1e-5)
    if method == "gausslegendre":
        assert res.completeness_gap == pytest.approx(abs(float(delta)), abs=1e-4)


def test_the_zero_baseline_through_a_pre_norm_needs_many_steps_a_token_baseline_few(tm):
    """RMSNorm is scale-invariant, so on the path from the zero embedding most of the change happens near 0:
    the quadrature needs ~100 points there, and the completeness check says so; a token's embedding as the
    baseline avoids the singular point and converges with 8."""
    tokens = tm.to_tokens(PROMPT)
    the = tm.hf.get_input_embeddings().weight[tm.first_token_id(" the")[0]].detach()
    base = the.expand(tokens.shape[1], -1).clone()
    fast = integrated_gradients(tm, PROMPT, " Mary", " John", n_steps=8, baseline=base)
    assert fast.converged and fast.headline()["method"] == "integrated gradients"
    assert float(fast.attributions.sum()) == pytest.approx(fast.f_input - fast.f_baseline, rel=1e-3)
    assert not integrated_gradients(tm, PROMPT, " Mary", " John", n_steps=16).converged
    assert integrated_gradients(tm, PROMPT, " Mary", " John", n_steps=100).converged


def test_unconverged_result_is_not_called_integrated_gradients(tm):
    res = integrated_gradients(tm, PROMPT, " Mary", n_steps=2, method="trapezoid", tolerance=1e-9)
    h = res.headline()
    assert not res.converged and h["method"].startswith("not integrated gradients") and "n_steps=4" in h["method"]


def test_bos_keeps_its_embedding_and_gets_nothing(tm):
    tokens = tm.to_tokens(PROMPT, prepend_bos=True)
    assert int(tokens[0, 0]) == tm.tokenizer.bos_token_id
    res = integrated_gradients(tm, tokens, " Mary", keep_bos=True, n_steps=8)
    assert float(res.attributions[0]) == 0.0 and float(res.attributions[1:].abs().sum()) > 0
    with pytest.raises(ValueError, match="baseline has shape"):
        integrated_gradients(tm, PROMPT, " Mary", baseline=torch.zeros(3, 3))


def test_ig_command_writes_the_report_and_says_when_it_has_not_converged(tm, tmp_path):
    import json

    from typer.testing import CliRunner

    from interplab.cli import app

    base = ["ig", "--model", str(tm.source), "--prompt", PROMPT, "--answer", " Mary", "--wrong", " John", "--json"]
    r = CliRunner().invoke(app, [*base, "--steps", "8", "--baseline-token", " the", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["method"] == "integrated gradients" and h["converged"]
    assert "Integrated gradients" in (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    r = CliRunner().invoke(
        app, [*base, "--steps", "2", "--method", "trapezoid", "--tolerance", "1e-9", "--out", str(tmp_path / "b")]
    )
    assert r.exit_code == 0 and json.loads(r.stdout)["converged"] is False
    r = CliRunner().invoke(app, [*base, "--baseline", "mean", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "use zero or pad" in r.output
