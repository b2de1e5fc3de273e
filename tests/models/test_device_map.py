"""``interplab.load(..., device_map=...)``: a model spread by accelerate over the CPU and disk offload gives the
same logits, caches, ablations and patches as the same model in memory (hooks follow the activations' devices).
With GPUs the same code places layers on ``cuda:N``; here only the CPU/disk split can be tested."""

from __future__ import annotations

import pytest
import torch

import interplab
from interplab import hooks as H
from tests.tiny_tokenized import make_tiny_tokenized_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny4"), n_layers=4)


def _split_map(n_layers: int) -> dict[str, str]:
    dm = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    dm.update({f"model.layers.{i}": "cpu" if i < n_layers // 2 else "disk" for i in range(n_layers)})
    return dm


def test_split_model_matches_the_model_in_memory(tiny_dir, tmp_path):
    whole = interplab.load(tiny_dir)
    split = interplab.load(tiny_dir, device_map=_split_map(4), offload_folder=tmp_path / "offload")
    assert getattr(split.hf, "hf_device_map", None) is not None
    assert any(p.device.type == "meta" for p in split.hf.model.layers[3].parameters())  # really offloaded
    assert split.device == torch.device("cpu")
    toks = whole.as_tokens(["The Eiffel Tower is located in the city of Paris."])
    names = ["blocks.1.hook_resid_post", "blocks.3.attn.hook_z", "blocks.3.hook_resid_post"]
    la, ca = whole.run(toks, cache=names)
    lb, cb = split.run(toks, cache=names)
    torch.testing.assert_close(lb, la)
    for n in names:
        torch.testing.assert_close(cb[n], ca[n])
    # writing hooks on an offloaded layer: ablate a head, patch a residual
    ablate = [H.Ablate("blocks.3.attn.hook_z", heads=[1])]
    ablated = split.run(toks, interventions=ablate)[0]
    assert not torch.allclose(ablated, lb)  # the hook acted on the offloaded layer
    torch.testing.assert_close(ablated, whole.run(toks, interventions=ablate)[0])
    patch = [H.Patch("blocks.2.hook_resid_pre", ca["blocks.1.hook_resid_post"] * 0.5)]
    torch.testing.assert_close(split.run(toks, interventions=patch)[0], whole.run(toks, interventions=patch)[0])


def test_device_map_errors_are_clear(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="offload_folder"):
        interplab.load(tiny_dir, device_map=_split_map(4))
    with pytest.raises(ValueError, match="either device or device_map"):
        interplab.load(tiny_dir, device="cuda:0", device_map="auto")
