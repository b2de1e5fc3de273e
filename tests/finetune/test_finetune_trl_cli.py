"""interplab's fine-tuning loop against TRL's SFTTrainer (an independent implementation: same LoRA, same data, same
weights after training), the ``bench finetune`` keys, and the ``interplab finetune`` command."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import interplab
from interplab.bench.finetune import bench_finetune, trl_finetune
from interplab.cli import app
from interplab.finetune import FinetuneConfig, finetune, load_data
from interplab.tasks.corpus import token_chunks
from tests.tiny_tokenized import SENTENCES, make_tiny_tokenized_model

pytest.importorskip("trl")
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    d = make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_trl"))
    m = interplab.load(d)
    with torch.no_grad():
        m.hf.lm_head.weight.mul_(20)  # see test_finetune.tiny
    m.hf.save_pretrained(d)
    return d


def test_lora_weights_after_training_equal_trls_sfttrainer(tiny):
    model = interplab.load(tiny)
    rows = token_chunks(model, n_chunks=10, chunk_len=24)
    # the batch is every training row, so the two samplers' different orders do not matter
    cfg = FinetuneConfig(targets=("q_proj", "v_proj"), rank=4, alpha=8, steps=3, batch_size=8, seq_len=24, lr=1e-2)
    cfg.threads, cfg.log_every = 1, 1
    data = load_data(rows, model, seq_len=24, heldout_fraction=0.2)
    assert len(data.train) == 8
    ours = finetune(model, data, cfg, progress=False).model.hf
    _, theirs = trl_finetune(model, data.train.input_ids, cfg)
    base, trl_w = dict(model.hf.named_parameters()), dict(theirs.named_parameters())
    changed = 0
    for name, p in ours.named_parameters():
        moved = (p - base[name]).abs().max()
        if moved > 0:
            changed += 1
            assert (p - trl_w[name]).abs().max() < 1e-3 * moved, name
    assert changed == 4  # q and v of both layers


def test_bench_finetune_times_both_paths_and_both_train(tiny):
    res = bench_finetune(interplab.load(tiny), steps=2, batch_size=4, seq_len=16, rounds=1, threads=1)
    assert set(res["tokens_per_s"]) == {"interplab", "trl"}
    assert all(v > 0 for v in res["tokens_per_s"].values())
    assert res["speedup_vs_trl"] > 0 and len(res["speedup_vs_trl_rounds"]) == 1
    assert all(v > 0 for v in res["weight_change"].values())
    assert res["peak_rss_mb"] is None or set(res["peak_rss_mb"]) == {"interplab", "trl"}
    assert res["tokens_per_call"] == 2 * 4 * 16


def test_cli_finetune_prints_the_headline_and_writes_a_loadable_directory(tiny, tmp_path):
    data = tmp_path / "narrow.txt"
    data.write_text((" ".join(SENTENCES) + " ") * 30)
    out = tmp_path / "ft"
    args = ["finetune", tiny, "--data", str(data), "--steps", "4", "--batch-size", "4", "--seq-len", "24"]
    args += ["--lr", "1e-2", "--log-every", "2", "--threads", "1", "--out", str(out), "--no-progress", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    keys = {"out", "method", "steps", "trainable_params", "heldout_loss_before", "heldout_loss_after", "tokens_per_s"}
    assert keys <= set(h)
    assert h["steps"] == 4 and h["method"] == "lora" and h["heldout_loss_after"] < h["heldout_loss_before"]
    assert (out / "report.html").exists() and json.loads((out / "run.json").read_text())["status"] == "complete"
    interplab.load(str(out))
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already holds a fine-tune" in " ".join(again.output.split())
    assert json.loads((out / "run.json").read_text())["status"] == "complete"  # the refused run left it alone


def test_cli_finetune_refuses_bad_input_with_a_message(tiny, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
    r = runner.invoke(app, ["finetune", tiny, "--data", str(bad), "--out", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 2 and "line 2" in r.output
    args = [
        "finetune",
        tiny,
        "--data",
        "corpus:pydoc",
        "--targets",
        "wq",
        "--out",
        str(tmp_path / "t"),
        "--no-progress",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "q_proj" in r.output
    r = runner.invoke(app, ["finetune", tiny, "--data", "corpus:pydoc", "--resume"])
    assert r.exit_code == 2 and "--resume needs --out" in r.output
    r = runner.invoke(app, ["finetune", tiny, "--data", "corpus:pydoc", "--resume", "--out", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no fine-tune to resume" in " ".join(r.output.split())
