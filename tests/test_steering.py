"""Interventions named by the user (:mod:`interplab.steering`): steering vectors from a file or contrast prompts,
ablated heads, their norm beside the residual stream's; ``interplab generate`` and ``chat`` with them."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from tiny_tokenized import make_tiny_tokenized_model
from typer.testing import CliRunner

import interplab
from interplab.cli import app
from interplab.hooks import Ablate, AddVector
from interplab.steering import contrast_vector, interventions_from_args, parse_heads, steering_norms

runner = CliRunner()


@pytest.fixture(scope="module")
def tm(tmp_path_factory):
    return interplab.load(make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_steer")))


def test_contrast_vector_is_the_difference_of_last_token_residuals(tm):
    v = contrast_vector(tm, "Love", "Hate", 1)
    _, ca = tm.run(tm.to_tokens("Love"), cache=["blocks.1.hook_resid_post"])
    _, cb = tm.run(tm.to_tokens("Hate"), cache=["blocks.1.hook_resid_post"])
    want = ca["blocks.1.hook_resid_post"][0, -1] - cb["blocks.1.hook_resid_post"][0, -1]
    assert torch.allclose(v, want.float())
    ivs = interventions_from_args(tm, {"steer": '"Love"-"Hate"', "steer_layer": 1, "steer_scale": 3})
    assert len(ivs) == 1 and isinstance(ivs[0], AddVector) and ivs[0].scale == 3
    assert torch.allclose(ivs[0].vector, v)  # type: ignore[arg-type]


def test_file_vectors_heads_and_errors(tm, tmp_path):
    f = tmp_path / "v.safetensors"
    save_file({"v": torch.ones(tm.cfg.d_model)}, str(f))
    ivs = interventions_from_args(tm, {"steer": str(f), "steer_layer": 0, "ablate": "1.0,1.2,0.3"})
    assert [type(i) for i in ivs] == [AddVector, Ablate, Ablate]
    assert parse_heads(tm, "1.0, 0.3") == [(1, 0), (0, 3)]
    with pytest.raises(ValueError, match="does not exist"):
        parse_heads(tm, "9.0")
    with pytest.raises(ValueError, match="L.H,L.H"):
        parse_heads(tm, "1-0")
    with pytest.raises(ValueError, match="needs steer_layer"):
        interventions_from_args(tm, {"steer": str(f)})
    with pytest.raises(FileNotFoundError, match="contrast prompts"):
        interventions_from_args(tm, {"steer": "nope.safetensors", "steer_layer": 0})
    save_file({"v": torch.ones(3)}, str(f))
    with pytest.raises(ValueError, match="needs \\["):
        interventions_from_args(tm, {"steer": str(f), "steer_layer": 0})
    n = steering_norms(tm, torch.ones(tm.cfg.d_model), 2.0, "blocks.0.hook_resid_post", "hello there")
    assert n["vector_norm"] == pytest.approx(2 * tm.cfg.d_model**0.5, rel=1e-4) and n["resid_norm"] > 0


def test_generate_command_shows_both_texts_and_warns_when_the_vector_swamps_the_stream(tm, tmp_path):
    args = ["generate", "--model", str(tm.source), "--prompt", "The quick brown fox", "--max-new-tokens", "6"]
    r = runner.invoke(app, [*args, "--json", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["baseline"] == tm.generate("The quick brown fox", max_new_tokens=6) and "intervened" not in h
    steer = ["--steer", '"Love"-"Hate"', "--layer", "1", "--scale", "500"]
    r = runner.invoke(app, [*args, *steer, "--json", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["intervened"] != h["baseline"] and h["steering"]["ratio"] > 1 and "swamps" in h["warning"]
    r = runner.invoke(app, [*args, "--steer", '"Love"-"Hate"', "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "--steer needs --layer" in " ".join(r.output.split())


def test_chat_keeps_the_conversation_and_applies_the_interventions(tm):
    r = runner.invoke(
        app,
        ["chat", "--model", str(tm.source), "--ablate", "0.1", "--show-baseline", "--max-new-tokens", "4"],
        input="hello\nand again\n\n",
    )
    assert r.exit_code == 0, r.output
    assert r.output.count("model> ") == 2 and r.output.count("baseline> ") == 2
