"""Activation datasets: values equal the model's cache, shards, resume after a kill (bit-identical), loader, stats."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import interplab
from interplab.io.activations import (
    ActivationDataset,
    SplitBy,
    Stats,
    extract_activations,
    load_acts,
    save_acts,
    stop_layer_for,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tiny_tok_dir):
    return interplab.load(tiny_tok_dir)


def test_stop_layer_gives_the_same_activations(tiny):
    toks = torch.randint(0, tiny.cfg.d_vocab, (2, 12))
    for hook in [
        "hook_embed",
        "blocks.0.hook_resid_pre",
        "blocks.0.attn.hook_z",
        "blocks.1.mlp.hook_post",
        "blocks.1.hook_resid_post",
        "ln_final.hook_normalized",
    ]:
        ref = tiny.run(toks, cache=[hook]).cache[hook]
        got = tiny.run(toks, cache=[hook], stop_at_layer=stop_layer_for(tiny, hook)).cache[hook]
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_extract_values_shards_and_index(tiny, tmp_path):
    hook = "blocks.1.hook_resid_post"
    ds = extract_activations(tiny, hook, tmp_path / "a", n_tokens=10 * 32, chunk_len=32, batch=3, shard_rows=50)
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["status"] == "complete" and man["hook"] == hook and man["d"] == 32 and man["n_rows"] == 320
    assert [s["rows"] for s in man["shards"]] == [50] * 6 + [20]
    assert len(ds) == 320 and ds.d == 32
    ref = tiny.run(ds.tokens, cache=[hook]).cache[hook]
    x = ds.load_all()
    seq, pos = ds.index()
    torch.testing.assert_close(x, ref[seq, pos], rtol=0, atol=1e-5)
    assert seq.tolist() == [i // 32 for i in range(320)] and pos.tolist() == [i % 32 for i in range(320)]
    # last position / an int position; per-head points are flattened
    ds2 = extract_activations(
        tiny, "blocks.0.attn.hook_z", tmp_path / "b", n_tokens=4 * 32, chunk_len=32, positions="last"
    )
    z = tiny.run(ds2.tokens, cache=["blocks.0.attn.hook_z"]).cache["blocks.0.attn.hook_z"]
    torch.testing.assert_close(ds2.load_all(), z[:, -1].reshape(4, -1), rtol=0, atol=1e-5)
    ds3 = extract_activations(tiny, hook, tmp_path / "c", n_tokens=4 * 32, chunk_len=32, positions=5, skip_first=True)
    assert ds3.index()[1].tolist() == [5] * 4
    ds4 = extract_activations(tiny, hook, tmp_path / "d", n_tokens=4 * 32, chunk_len=32, skip_first=True)
    assert len(ds4) == 4 * 31 and 0 not in ds4.index()[1].tolist()


def test_bad_input_is_refused(tiny, tmp_path):
    with pytest.raises(KeyError, match="Unknown hook point"):
        extract_activations(tiny, "blocks.9.hook_resid_post", tmp_path / "x", n_tokens=64, chunk_len=32)
    with pytest.raises(ValueError, match="attention pattern"):
        extract_activations(tiny, "blocks.0.attn.hook_pattern", tmp_path / "x", n_tokens=64, chunk_len=32)
    extract_activations(tiny, "blocks.0.hook_resid_post", tmp_path / "y", n_tokens=64, chunk_len=32)
    with pytest.raises(ValueError, match="other settings"):
        extract_activations(tiny, "blocks.1.hook_resid_post", tmp_path / "y", n_tokens=64, chunk_len=32)


def test_resume_after_kill_gives_identical_shards(tiny, tmp_path):
    kw: dict[str, Any] = {"n_tokens": 12 * 32, "chunk_len": 32, "batch": 5, "shard_rows": 70}
    hook = "blocks.1.hook_mlp_out"
    extract_activations(tiny, hook, tmp_path / "full", **kw)

    class Killed(Exception):
        pass

    def kill_after(n):
        def progress(done, total):
            if done >= n:
                raise Killed

        return progress

    with pytest.raises(Killed):
        extract_activations(tiny, hook, tmp_path / "part", progress=kill_after(140), **kw)
    man = json.loads((tmp_path / "part" / "manifest.json").read_text())
    assert man["status"] == "running" and len(man["shards"]) == 2
    with pytest.raises(ValueError, match="incomplete"):
        ActivationDataset(tmp_path / "part")
    (tmp_path / "part" / "shard_00002.safetensors.tmp").write_bytes(b"half-written")  # a write cut off by the kill
    with pytest.raises(Killed):  # killed again, mid-way
        extract_activations(tiny, hook, tmp_path / "part", progress=kill_after(280), **kw)
    ds = extract_activations(tiny, hook, tmp_path / "part", **kw)
    full = ActivationDataset(tmp_path / "full")
    assert len(ds) == len(full) == 384
    for a, b in zip(full.shards, ds.shards):
        assert (tmp_path / "full" / a["file"]).read_bytes() == (tmp_path / "part" / b["file"]).read_bytes()


def test_loader_batches_split_and_stats(tiny, tmp_path):
    ds = extract_activations(
        tiny, "blocks.0.hook_resid_post", tmp_path / "a", n_tokens=8 * 32, chunk_len=32, shard_rows=40
    )
    x = ds.load_all()
    seen = []
    for xb, s, p in ds.batches(24, shuffle=True, seed=3, with_index=True):
        assert xb.shape[1] == ds.d
        seen += list(zip(s.tolist(), p.tolist()))
    assert sorted(seen) == [(i // 32, i % 32) for i in range(256)]  # every row exactly once
    a = torch.cat(list(ds.batches(24, seed=3)))
    b = torch.cat(list(ds.batches(24, seed=3)))
    c = torch.cat(list(ds.batches(24, seed=4)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)  # shuffled
    assert sum(len(v) for v in ds.batches(24, seed=0, drop_last=True)) == 240
    # splits: disjoint, covering
    for by in ("shard", "row"):
        tr, te = ds.split(0.25, by=by)
        ti = set(zip(*[t.tolist() for t in tr.index()]))
        si = set(zip(*[t.tolist() for t in te.index()]))
        assert not ti & si and len(ti | si) == 256 and 0 < len(te) < 256
    tr, te = ds.split(0.25, by="shard")
    assert te.index()[0].min() > tr.index()[0].max() - 1  # test rows come from later text
    one = ActivationDataset(ds.dir, ds._select[:1])  # by="auto": by shard with 2+ shards, else by row
    cases: tuple[tuple[ActivationDataset, SplitBy], ...] = ((ds, "shard"), (one, "row"))
    for d_, by in cases:
        for a_, b_ in zip(d_.split(0.25, by="auto"), d_.split(0.25, by=by)):
            assert all(torch.equal(u, v) for u, v in zip(a_.index(), b_.index()))
    # streaming statistics equal the batch statistics
    st = ds.stats(batch_size=37)
    torch.testing.assert_close(st.mean, x.double().mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st.var, x.double().var(0, unbiased=False), rtol=1e-10, atol=1e-12)
    y = torch.randn(1000, 5, dtype=torch.float64) * 3 + 7
    s2 = Stats()
    for part in y.split([1, 300, 2, 697]):
        s2.update(part)
    torch.testing.assert_close(s2.var, y.var(0, unbiased=False), rtol=1e-12, atol=1e-12)
    ctx = ds.context(2, 5, tiny.tokenizer, before=3, after=2)
    assert (
        len(ctx["before"]) == 3
        and len(ctx["after"]) == 2
        and ctx["token"] == tiny.tokenizer.decode([int(ds.tokens[2, 5])])
    )


def test_load_acts_plain_and_sharded(tiny, tmp_path):
    x, y = torch.randn(20, 4), torch.arange(20) % 2
    save_acts(tmp_path / "plain", x, y, template=torch.arange(20) % 3)
    got = load_acts(tmp_path / "plain")
    assert got.y is not None
    assert torch.equal(got.x, x) and torch.equal(got.y, y) and torch.equal(got.meta["template"], torch.arange(20) % 3)
    xx, _, _ = load_acts(tmp_path / "plain" / "acts.safetensors")
    assert torch.equal(xx, x)
    ds = extract_activations(tiny, "hook_embed", tmp_path / "sh", n_tokens=64, chunk_len=32, shard_rows=20)
    got = load_acts(tmp_path / "sh")
    assert got.y is None and torch.equal(got.x, ds.load_all()) and got.meta["hook"] == "hook_embed"
    with pytest.raises(FileNotFoundError):
        load_acts(tmp_path / "nothing")


def test_cli_acts(tiny_tok_dir, tmp_path):
    from interplab.cli import app

    r = CliRunner().invoke(
        app,
        [
            "acts",
            "--model",
            tiny_tok_dir,
            "--hook",
            "blocks.0.hook_resid_post",
            "--out",
            str(tmp_path / "o"),
            "--tokens",
            "128",
            "--chunk-len",
            "32",
            "--shard-rows",
            "50",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["n_rows"] == 128 and h["d"] == 32 and h["n_shards"] == 3
    assert json.loads((tmp_path / "o" / "run.json").read_text())["status"] == "complete"
    r = CliRunner().invoke(
        app,
        [
            "acts",
            "--model",
            tiny_tok_dir,
            "--hook",
            "blocks.7.hook_resid_post",
            "--out",
            str(tmp_path / "p"),
            "--tokens",
            "64",
            "--chunk-len",
            "32",
        ],
    )
    assert r.exit_code == 2 and "Unknown hook point" in r.output


def test_task_induction_source(tiny, tmp_path):
    ds = extract_activations(
        tiny,
        "blocks.0.hook_resid_post",
        tmp_path / "ind",
        task="induction",
        n_tokens=4 * 32,
        chunk_len=32,
        positions="last",
    )
    t = ds.tokens
    assert t.shape == (4, 32) and torch.equal(t[:, :16], t[:, 16:]) and len(ds) == 4
    with pytest.raises(ValueError, match="either a text"):
        extract_activations(tiny, "blocks.0.hook_resid_post", tmp_path / "z", task="induction", text="pydoc")
