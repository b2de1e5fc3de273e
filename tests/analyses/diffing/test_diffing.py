"""Two-model diffing (interplab.analyses.diffing): the losses are the model's own cross-entropy, a model
diffed with itself differs nowhere, a planted difference comes out on top, a planted jump in a checkpoint
series is found at its step, and different tokenizers are aligned on text as documented."""

from __future__ import annotations

import copy
import json
from typing import Any, cast

import pytest
import torch
from tiny_tokenized import XSS_TOKEN, boosted_unembedding, make_tiny_tokenized_model
from typer.testing import CliRunner

import interplab
from interplab.analyses.diffing import (
    CheckpointSeriesResult,
    DiffResult,
    diff_checkpoints,
    diff_models,
    same_tokenizer,
)
from interplab.cli import app
from interplab.models.model import Model
from interplab.models.scoring import model_token_losses
from interplab.tasks.corpus import token_chunks

N_CHUNKS, CHUNK_LEN = 4, 48


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory):
    return make_tiny_tokenized_model(tmp_path_factory.mktemp("diff_a"), vocab_size=400)


@pytest.fixture(scope="session")
def model_a(tok_dir):
    return interplab.load(tok_dir)


@pytest.fixture(scope="session")
def other_tokenizer_model(tmp_path_factory):
    """A different tokenizer (a smaller BPE vocabulary) and different weights."""
    return interplab.load(make_tiny_tokenized_model(tmp_path_factory.mktemp("diff_c"), vocab_size=300))


def _copy(model: Model, name: str, noise: float = 0.0, seed: int = 1) -> Model:
    hf = copy.deepcopy(model.hf)
    if noise:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(torch.randn(p.shape, generator=g) * noise)
    return Model(hf, model.tokenizer, name=name)


@pytest.fixture(scope="session")
def chunks(model_a):
    """The corpus module's chunks of the default text (pydoc topics), as the diff should see them."""
    return token_chunks(model_a, n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN)


@pytest.fixture(scope="session")
def frequent(chunks):
    """The most frequent predicted token in the chunks (the planted token)."""
    return int(torch.mode(chunks[:, 1:].flatten()).values)


# ---------------------------------------------------------------------------------- losses


def test_losses_equal_direct_cross_entropy(model_a, chunks):
    tokens = chunks
    logits = model_a.run(tokens).logits.float()
    direct = -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(model_token_losses(model_a, tokens, batch_size=3), direct, atol=1e-5, rtol=1e-5)

    res = diff_models(model_a, model_a, n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN)
    assert res.mode == "tokens" and res.n_units == N_CHUNKS * (CHUNK_LEN - 1)
    # the chunks are the corpus module's chunks; unit (i, p) is token p of chunk i
    assert torch.equal(res.token_id.view(N_CHUNKS, -1), tokens[:, 1:])
    assert torch.equal(res.position.view(N_CHUNKS, -1)[0], torch.arange(1, CHUNK_LEN))
    torch.testing.assert_close(res.loss_a.view(N_CHUNKS, -1), direct, atol=1e-5, rtol=1e-5)
    assert res.headline()["mean_loss_a"] == pytest.approx(float(direct.mean()), abs=1e-4)


def test_self_diff_is_zero_everywhere(model_a):
    res = diff_models(model_a, model_a, n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN)
    assert torch.equal(res.diff, torch.zeros_like(res.diff))
    h = res.headline()
    assert h["mean_diff"] == 0 and h["frac_a_better"] == 0 and h["frac_b_better"] == 0
    assert set(h["quantiles"].values()) == {0.0}
    assert h["top_contexts"] == {"a_better": [], "b_better": []}
    assert h["top_tokens"] and all(r["mean_diff"] == 0 and r["better"] == "same" for r in h["top_tokens"])
    # a separately loaded copy (same weights, same tokenizer) too
    res2 = diff_models(model_a, _copy(model_a, "copy"), n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN)
    assert float(res2.diff.abs().max()) == 0.0


def test_planted_difference_tops_the_table(model_a, frequent):
    t = frequent
    b = boosted_unembedding(model_a, t, boost=3.0)
    res = diff_models(model_a, b, n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN)
    top = res.headline()["top_tokens"]
    assert top[0]["token_id"] == t and top[0]["better"] == "B"
    assert top[0]["mean_diff"] < -1.5  # +3 on the logit: the token's loss falls by most of 3 nats
    assert top[0]["count"] == int((res.token_id == t).sum())
    by_dir = res.headline()["top_tokens_by_direction"]
    assert [r["token_id"] for r in by_dir["b_better"]] == [t] and all(r["better"] == "A" for r in by_dir["a_better"])
    # every other token type got (slightly) worse: probability moved to the boosted token
    others = res.token_table(min_count=1).iloc[1:]
    assert (others["mean_diff"] > 0).all() and others["mean_diff"].abs().max() < abs(top[0]["mean_diff"]) / 5
    ctx = res.top_contexts(5)
    assert ctx["b_better"] and all(r["token"] == model_a.tokenizer.decode([t]) for r in ctx["b_better"])
    assert ctx["a_better"] and all(r["diff"] > 0 for r in ctx["a_better"])
    # swapping the models flips every sign
    rev = diff_models(b, model_a, n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN)
    torch.testing.assert_close(rev.diff, -res.diff)


# ---------------------------------------------------------------------------------- checkpoint series


def test_checkpoint_series_finds_the_abrupt_step(model_a, frequent):
    t = frequent
    boosted = boosted_unembedding(model_a, t, boost=3.0)
    ckpts = [model_a, _copy(model_a, "ckpt1", noise=1e-4, seed=1), boosted, _copy(boosted, "ckpt3", noise=1e-4, seed=2)]
    ckpts[2].name = "ckpt2"
    series = diff_checkpoints(ckpts, n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN, threshold=1.0)
    n_t = int((series.token_id == t).sum())
    assert series.drops_per_step == [0, n_t, 0]
    assert series.rises_per_step == [0, 0, 0]
    pc = series.phase_change_step()
    assert pc is not None
    assert pc["step"] == 2 and pc["from"] == "ckpt1" and pc["to"] == "ckpt2" and pc["n_drops"] == n_t
    ev = series.events("drop")
    assert len(ev) == n_t and set(ev["token_id"]) == {t} and set(ev["step"]) == {2}
    assert (ev["abruptness"].to_numpy() > 0.95).all()
    tt = series.token_table()
    assert int(tt.iloc[0]["token_id"]) == t and int(tt.iloc[0]["main_step"]) == 2
    h = series.headline()
    assert h["phase_change_step"]["step"] == 2 and h["top_tokens"][0]["token_id"] == t
    # the first-vs-last pair is the two-model diff, without recomputation
    pair = series.pair(0, -1)
    assert pair.headline()["top_tokens"][0]["token_id"] == t
    direct = diff_models(model_a, ckpts[-1], n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN)
    torch.testing.assert_close(pair.loss_b, direct.loss_b)


def test_series_of_directories_loads_one_at_a_time(model_a, other_tokenizer_model, tmp_path):
    dirs = []
    for i in range(3):
        d = tmp_path / f"ckpt-{i}"
        _copy(model_a, f"c{i}", noise=0.02 * i, seed=i).save(d)
        dirs.append(str(d))
    series = diff_checkpoints(dirs, n_chunks=2, chunk_len=32, threshold=0.5)
    assert series.names == dirs and series.losses.shape == (3, 2 * 31)
    torch.testing.assert_close(series.losses[0], diff_models(model_a, model_a, n_chunks=2, chunk_len=32).loss_a)
    series.save(tmp_path / "out")
    back = CheckpointSeriesResult.load(tmp_path / "out")
    assert back.headline() == series.headline()
    with pytest.raises(ValueError, match="does not share the first checkpoint's tokenizer"):
        diff_checkpoints([model_a, other_tokenizer_model, model_a], n_chunks=2, chunk_len=32)
    with pytest.raises(ValueError, match="at least 2"):
        diff_checkpoints([model_a], n_chunks=2, chunk_len=32)


# ---------------------------------------------------------------------------------- tokenizers


def test_mismatched_tokenizers_are_aligned_on_text(model_a, other_tokenizer_model):
    c = other_tokenizer_model
    ok, why = same_tokenizer(model_a, c, "The quick brown fox jumps over the lazy dog.")
    assert not ok and "tokenizes differently" in why
    with pytest.raises(ValueError, match="tokenizers differ"):
        diff_models(model_a, c, n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN, alignment="tokens")

    res = diff_models(model_a, c, n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN)
    assert res.mode == "text" and (res.token_id == -1).all()
    h = res.headline()
    assert {"mean_loss_a", "mean_loss_b", "top_tokens", "nats_per_char_a", "nats_per_char_b"} <= set(h)
    assert res.settings["tokens_per_unit_a"] >= 1 and res.settings["tokens_per_unit_b"] >= 1

    # check every chunk by hand: the units tile the end of the chunk's text, and a unit's loss is the sum of
    # the losses of each model's own tokens inside it (first unit dropped: no BOS, its first token has no loss)
    from interplab.tasks.corpus import corpus_text

    text = corpus_text(None)
    for ci, (c0, c1) in enumerate(res.settings["char_spans"]):
        sub = text[c0:c1]
        sel = (res.chunk == ci).nonzero().flatten().tolist()
        joined = "".join(res.tokens[i] for i in sel)
        assert joined and sub.endswith(joined) and len(joined) < len(sub)
        start = len(sub) - len(joined)
        for m, losses in ((model_a, res.loss_a), (c, res.loss_b)):
            enc = m.tokenizer(sub, add_special_tokens=False, return_offsets_mapping=True)
            ids, offs = enc["input_ids"], enc["offset_mapping"]
            per_token = model_token_losses(m, torch.tensor([ids]))[0]  # loss of token k+1
            k0 = next(k for k, (s, _) in enumerate(offs) if s >= start)
            assert offs[k0 - 1][1] <= start  # a clean cut
            assert float(losses[sel].sum()) == pytest.approx(float(per_token[k0 - 1 :].sum()), rel=1e-5, abs=1e-4)


def test_text_alignment_of_one_tokenizer_reproduces_the_token_path(model_a):
    b = boosted_unembedding(model_a, 5, boost=1.0)
    tok = diff_models(model_a, b, n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN)
    txt = diff_models(model_a, b, n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN, alignment="text")
    assert tok.mode == "tokens" and txt.mode == "text"
    # every cut is common, so the units are the tokens; each chunk's first token (no BOS) has no loss in either path
    assert txt.tokens == tok.tokens and torch.equal(txt.chunk, tok.chunk)
    torch.testing.assert_close(txt.loss_a, tok.loss_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(txt.loss_b, tok.loss_b, atol=1e-5, rtol=1e-5)
    assert txt.settings["tokens_per_unit_a"] == txt.settings["tokens_per_unit_b"] == 1.0


# ---------------------------------------------------------------------------------- bad input, results, CLI


def test_bad_input_is_explained(model_a, tiny_dirs):
    with pytest.raises(ValueError, match="fewer or shorter chunks"):
        diff_models(model_a, model_a, text="far too short", n_chunks=2, chunk_len=32)
    with pytest.raises(ValueError, match="n_ctx"):
        diff_models(model_a, model_a, n_chunks=1, chunk_len=1000)
    with pytest.raises(ValueError, match="not both"):
        diff_models(model_a, model_a, source="pydoc", text="x")
    with pytest.raises(ValueError, match="alignment must be"):
        diff_models(model_a, model_a, alignment=cast(Any, "chars"))  # an unknown name on purpose
    with pytest.raises(FileNotFoundError):
        diff_models(model_a, model_a, source="/no/such/file.txt")
    toy = interplab.load(tiny_dirs["toy"])
    with pytest.raises(ValueError, match="no tokenizer"):
        diff_models(toy, toy, n_chunks=1, chunk_len=8)
    # models without a tokenizer diff on token ids
    ids = torch.randint(0, toy.cfg.d_vocab, (3, 20), generator=torch.Generator().manual_seed(0))
    res = diff_models(toy, toy, tokens=ids)
    assert res.n_units == 3 * 19 and res.tokens[0].startswith("#") and float(res.diff.abs().max()) == 0


def test_result_round_trip_plot_and_escaped_report(model_a, tmp_path):
    t = model_a.tokenizer.convert_tokens_to_ids(XSS_TOKEN)
    text = ("The quick brown fox " + XSS_TOKEN + " jumps over the lazy dog. ") * 40
    res = diff_models(model_a, boosted_unembedding(model_a, t, 4.0), text=text, n_chunks=3, chunk_len=40)
    assert res.headline()["top_tokens"][0]["token"] == XSS_TOKEN
    res.save(tmp_path)
    back = DiffResult.load(tmp_path)
    assert back.headline() == res.headline() and back.tokens == res.tokens
    json.dumps(json.loads((tmp_path / "diff.json").read_text()), allow_nan=False)
    for kind in ("both", "hist", "tokens", "scatter"):
        assert res.plot(kind).to_plotly_json()["data"]
    assert len(res.to_frame("units")) == res.n_units and next(iter(res.to_frame("quantiles")["quantile"])) == "q01"
    from interplab.report.html import Report
    from interplab.report.sections.diffing import diff_parts

    html = Report("diff").section("Two-model diff", *diff_parts(res)).to_html()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" not in html


runner = CliRunner()


def test_cli_diff_writes_run_and_json(model_a, tok_dir, tmp_path):
    other = tmp_path / "noisy"
    _copy(model_a, "noisy", noise=0.05).save(other)
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "diff",
            "--model-a",
            tok_dir,
            "--model-b",
            str(other),
            "--n-chunks",
            "2",
            "--chunk-len",
            "32",
            "--json",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert {"mean_loss_a", "mean_loss_b", "top_tokens", "quantiles", "top_contexts"} <= set(h)
    assert h["mode"] == "tokens" and h["n_units"] == 2 * 31
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete"
    assert {"diff.json", "diff_units.parquet", "report.html"} <= set(run["artefacts"])
    assert (out / "report.html").read_text().count('class="ipl-section"') == 1

    short = tmp_path / "short.txt"
    short.write_text("too short")
    r = runner.invoke(app, ["diff", "-a", tok_dir, "-b", tok_dir, "--text", str(short), "--out", str(tmp_path / "r2")])
    assert r.exit_code == 2 and "fewer or shorter chunks" in " ".join(r.output.split())
    r = runner.invoke(app, ["diff", "-a", tok_dir, "--out", str(tmp_path / "r3")])
    assert r.exit_code == 2 and "--model-b" in r.output

    r = runner.invoke(
        app,
        [
            "diff",
            "-c",
            tok_dir,
            "-c",
            str(other),
            "-c",
            tok_dir,
            "--n-chunks",
            "2",
            "--chunk-len",
            "32",
            "--json",
            "--out",
            str(tmp_path / "r4"),
        ],
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["checkpoints"]["n_checkpoints"] == 3 and h["mean_loss_a"] == h["mean_loss_b"]
    assert (tmp_path / "r4" / "checkpoint_losses.parquet").exists()


# ---------------------------------------------------------------------------------- SmolLM2
