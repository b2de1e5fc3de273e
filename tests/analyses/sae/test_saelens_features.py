"""SAEs in SAELens's format load into interplab and compute what SAELens computes (its own classes as the
independent implementation); any SAE's max-activating examples and direct logit effects, on planted features."""

from __future__ import annotations

import pytest
import torch
from tiny_tokenized import make_tiny_tokenized_model, task_text

import interplab
from interplab.analyses.sae import SAE, SAEConfig
from interplab.analyses.sae.features import (
    feature_logit_effects,
    load_saelens,
    max_activating_examples,
    saelens_hook,
)
from interplab.models.folding import fold_read, norm_info


@pytest.fixture(scope="module")
def tm(tmp_path_factory):
    m = interplab.load(
        make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_saelens"), vocab_size=1200, extra_text=task_text())
    )
    assert m.first_token_id(" Mary")[1] == 1 and m.first_token_id(" John")[1] == 1  # single tokens
    return m


def _saelens(arch: str, apply_b_dec: bool, d_in: int = 32, d_sae: int = 48):
    import sae_lens

    cls, cfg_cls, kw = {
        "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig, {}),
        "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig, {"k": 5}),
        "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig, {}),
    }[arch]
    cfg = cfg_cls(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=apply_b_dec, **kw)
    cfg.metadata.hook_name = "blocks.1.hook_resid_post"
    cfg.metadata.model_name = "tiny"
    sae = cls(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name.startswith("b") else 1.0))
            if name == "threshold":
                p.copy_(p.abs())
    return sae


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_loaded_saelens_sae_computes_what_saelens_computes(tmp_path, arch, apply_b_dec):
    theirs = _saelens(arch, apply_b_dec)
    theirs.save_model(tmp_path)
    ours = load_saelens(tmp_path)
    assert saelens_hook(tmp_path) == ("blocks.1.hook_resid_post", "tiny")
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f_theirs = theirs.encode(x)
        assert (f_theirs > 0).float().mean() > 0.02  # features do fire
        assert torch.allclose(ours.encode(x), f_theirs, atol=1e-5)
        assert torch.allclose(ours(x), theirs.decode(f_theirs), atol=1e-4)


def test_unsupported_saelens_files_are_refused(tmp_path):
    import json

    theirs = _saelens("standard", True)
    theirs.save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(ValueError, match="architecture 'gated' is not supported"):
        load_saelens(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "layer_norm"}))
    with pytest.raises(ValueError, match="normalize_activations"):
        load_saelens(tmp_path)
    with pytest.raises(FileNotFoundError, match="not an SAE in SAELens's format"):
        load_saelens(tmp_path / "nothing")


def test_planted_features_fire_on_their_token_and_promote_their_token(tm):
    """Feature 0 reads the embedding of ' Mary' (ReLU(<x, e> - 0.9 |e|^2 / |e|): only that token clears the bias);
    feature 1's decoder row is the folded unembedding column of ' John'."""
    mary = tm.first_token_id(" Mary")[0]
    john = tm.first_token_id(" John")[0]
    E = tm.W_E.float()
    W_U = fold_read(tm.W_U.float(), norm_info(tm.adapter.ln_final()))
    sae = SAE(SAEConfig(d_in=tm.cfg.d_model, n_features=4, kind="relu"))
    with torch.no_grad():
        e = E[mary]
        sae.W_enc.zero_()
        sae.b_dec.zero_()
        sae.W_enc[:, 0] = e / e.norm()
        sae.b_enc.fill_(-1e3)
        sae.b_enc[0] = -0.9 * float(e.norm())
        sae.W_dec[1] = W_U[:, john] / W_U[:, john].norm()
    tokens = tm.to_tokens(["When Mary and John went to the store, Mary gave", "The Eiffel Tower is in the city"])
    ex = max_activating_examples(tm, sae, "hook_embed", tokens, [0, 2], n_top=3)
    assert [r["token"] for r in ex[0]] == [" Mary", " Mary"] and ex[2] == []
    assert ex[0][0]["before"].endswith("When") or ex[0][0]["before"].endswith("store,")
    assert {r["seq"] for r in ex[0]} == {0}
    eff = feature_logit_effects(tm, sae, [1], k=3)
    assert eff[1]["top"][0][0] == " John"
    with pytest.raises(ValueError, match="d_in=7"):
        feature_logit_effects(tm, SAE(SAEConfig(d_in=7, n_features=2, k=1)), [0])


def test_sae_features_command_on_a_saelens_sae_and_on_ours(tm, tmp_path):
    import json

    from typer.testing import CliRunner

    from interplab.cli import app

    _saelens("standard", True).save_model(tmp_path / "lens")
    base = ["sae", "features", "--model", str(tm.source), "--n-chunks", "4", "--chunk-len", "16", "--json"]
    r = CliRunner().invoke(
        app, [*base, "--sae", str(tmp_path / "lens"), "--n-features", "3", "--out", str(tmp_path / "a")]
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["source"] == "SAELens" and h["hook"] == "blocks.1.hook_resid_post" and len(h["features"]) == 3
    page = (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    assert "Max-activating examples" in page and "Direct logit effects" in page
    ours = SAE(SAEConfig(d_in=tm.cfg.d_model, n_features=16, k=4))
    ours.save(tmp_path / "ours")
    r = CliRunner().invoke(
        app, [*base, "--sae", str(tmp_path / "ours"), "--features", "1,2", "--out", str(tmp_path / "b")]
    )
    assert r.exit_code == 2 and "give --hook" in " ".join(r.output.split())
    args = [*base, "--sae", str(tmp_path / "ours"), "--hook", "blocks.0.hook_resid_post", "--features", "1,2"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "c")])
    assert r.exit_code == 0 and json.loads(r.stdout)["features"] == [1, 2]
    r = CliRunner().invoke(app, [*args[:-2], "--features", "99", "--out", str(tmp_path / "d")])
    assert r.exit_code == 2 and "0..15" in r.output
