"""The tuned lens (Belrose et al. 2023): zero translators are the logit lens (the same KL as
:func:`interplab.analyses.observational.lens.logit_lens`), training lowers held-out KL, and a resumed run is
identical to an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from tiny_tokenized import make_tiny_tokenized_model

import interplab
from interplab.analyses.observational.lens import logit_lens
from interplab.analyses.observational.tuned_lens import TunedLensConfig, lens_kl, residual_states, train_tuned_lens
from interplab.models.scoring import unembed_resid

CFG = TunedLensConfig(n_chunks=6, heldout_chunks=3, chunk_len=24, steps=30, batch_tokens=64, lr=3e-3)


@pytest.fixture(scope="module")
def tm(tmp_path_factory):
    return interplab.load(make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_tl"), n_layers=3))


def test_untrained_translators_are_the_logit_lens(tm):
    tokens = tm.to_tokens("The quick brown fox jumps over the lazy dog.")
    hs, last = residual_states(tm, tokens)
    target = unembed_resid(tm, last[-1:]).float().log_softmax(-1)
    with torch.no_grad():
        ours = [float(lens_kl(target, unembed_resid(tm, hs[layer, -1:]))) for layer in range(hs.shape[0])]
    ref = logit_lens(tm, tokens).kl_to_final[: tm.cfg.n_layers - 1]
    assert torch.allclose(torch.tensor(ours), ref.float(), atol=1e-5)


def test_training_lowers_held_out_kl_at_every_layer(tm):
    _, res = train_tuned_lens(tm, CFG)
    h = res.headline()
    assert h["n_layers_compared"] == tm.cfg.n_layers - 1
    assert (res.kl_tuned_lens < res.kl_logit_lens).all(), h
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_a_killed_run_resumes_bit_for_bit(tm, tmp_path):
    full, res_full = train_tuned_lens(tm, CFG)
    with pytest.raises(KeyboardInterrupt):
        train_tuned_lens(tm, CFG, checkpoint_dir=tmp_path, checkpoint_every=4, on_step=_stop_at(14))
    resumed, res = train_tuned_lens(tm, CFG, checkpoint_dir=tmp_path, checkpoint_every=4)
    assert [h["step"] for h in res.history] == list(range(1, CFG.steps + 1))
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(res.kl_tuned_lens, res_full.kl_tuned_lens)
    with pytest.raises(ValueError, match="another tuned-lens configuration"):
        train_tuned_lens(tm, TunedLensConfig(**{**CFG.__dict__, "lr": 1.0}), checkpoint_dir=tmp_path)


def _stop_at(n: int):
    def cb(step: int, _loss: float) -> None:
        if step == n:
            raise KeyboardInterrupt

    return cb


def test_tuned_lens_command_trains_resumes_and_reports(tm, tmp_path):
    import json

    from typer.testing import CliRunner

    from interplab.cli import app

    args = ["tuned-lens", "--model", str(tm.source), "--steps", "6", "--n-chunks", "4", "--heldout-chunks", "2"]
    args += ["--chunk-len", "16", "--batch-tokens", "32", "--json"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert len(h["kl_tuned_lens"]) == tm.cfg.n_layers - 1 and h["steps"] == 6
    assert (tmp_path / "a" / "tuned_lens.safetensors").exists() and (tmp_path / "a" / "report.html").exists()
    r = CliRunner().invoke(app, [*args, "--resume", str(tmp_path / "a")])
    assert r.exit_code == 0 and json.loads(r.stdout)["kl_tuned_lens"] == h["kl_tuned_lens"]
    r = CliRunner().invoke(app, [*args, "--resume", str(tmp_path / "none")])
    assert r.exit_code == 2
