"""``interplab patch`` on your own prompt pairs (a JSONL file with named positions, or one pair on the command
line), with attribution patching, path patching and circuit discovery on the same pairs; bad pairs named."""

from __future__ import annotations

import json

import pytest
from tiny_tokenized import make_tiny_tokenized_model, task_text
from typer.testing import CliRunner

from interplab.cli import app
from interplab.tasks.user_pairs import one_pair, read_pairs, spans_to_segments

runner = CliRunner()
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When John and Mary went to the store, Mary gave a drink to"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_patch"), vocab_size=1200, extra_text=task_text())


def _said(r) -> str:
    return " ".join(r.output.split())


def test_spans_become_named_segments():
    segs = spans_to_segments(CLEAN, {"IO": "Mary", "S2": ["John", 2]})
    assert "".join(t for t, _ in segs) == CLEAN
    assert [(t, n) for t, n in segs if n] == [("Mary", "IO"), ("John", "S2")]
    with pytest.raises(ValueError, match="does not occur 3 time"):
        spans_to_segments(CLEAN, {"S": ["John", 3]})
    with pytest.raises(ValueError, match="overlap"):
        spans_to_segments(CLEAN, {"A": "Mary and", "B": "and John"})
    with pytest.raises(ValueError, match="same positions"):
        one_pair(CLEAN, CORRUPT, " Mary", " John", {"IO": "Mary"}, {"S": "John"})


def test_patch_one_pair_from_the_command_line_with_path_patching_and_a_circuit(tiny_dir, tmp_path):
    args = ["patch", "--model", tiny_dir, "--clean", CLEAN, "--corrupt", CORRUPT, "--answer", " Mary"]
    r = runner.invoke(
        app, [*args, "--wrong", " John", "--attribution", "--path", "--circuit", "--json", "--out", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert {"attribution_corr", "path_patching_top", "circuit"} <= set(h)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Path patching" in page and "Circuit" in page and "your pair" in page
    assert (tmp_path / "path_patching.json").exists() and (tmp_path / "circuit.json").exists()


def test_patch_pairs_file_with_named_positions(tiny_dir, tmp_path):
    rows = [
        {
            "clean": CLEAN.replace("store", s),
            "corrupt": CORRUPT.replace("store", s),
            "answer": " Mary",
            "wrong": " John",
            "positions": {"IO": "Mary", "S2": ["John", 2]},
            "corrupt_positions": {"IO": "John", "S2": ["Mary", 2]},
        }
        for s in ("store", "house")
    ]
    f = tmp_path / "pairs.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in rows), encoding="utf-8")
    assert len(read_pairs(f)) == 2
    r = runner.invoke(app, ["patch", "--model", tiny_dir, "--pairs", str(f), "--json", "--out", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["n_prompts"] == 2 and h["task"] == "your pairs"
    assert {c[1] for c in h["top"]} <= {"IO", "S2", "END"}  # the resid grid over the named positions


def test_bad_pairs_are_named(tiny_dir, tmp_path):
    f = tmp_path / "bad.jsonl"
    uneven = {"clean": CLEAN, "corrupt": CLEAN.replace("store", "park"), "answer": " Mary", "wrong": " John"}
    f.write_text(json.dumps({"clean": CLEAN, "corrupt": CORRUPT, "answer": " Mary", "wrong": " John"}) + "\n")
    f.write_text(f.read_text() + json.dumps(uneven) + "\n")
    r = runner.invoke(app, ["patch", "--model", tiny_dir, "--pairs", str(f), "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "line 2" in _said(r) and "15 tokens, corrupt 17" in _said(r)
    r = runner.invoke(app, ["patch", "--model", tiny_dir, "--clean", CLEAN, "--corrupt", CORRUPT])
    assert r.exit_code == 2 and "needs all four" in _said(r)
    r = runner.invoke(app, ["patch", "ioi", "--model", tiny_dir, "--pairs", str(f)])
    assert r.exit_code == 2 and "give one of" in _said(r)
    f.write_text('{"clean": "a", "corrupt": "b"}\n')
    r = runner.invoke(app, ["patch", "--model", tiny_dir, "--pairs", str(f), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "line 1" in _said(r) and "lacks ['answer', 'wrong']" in _said(r)


def test_patch_edges_json_has_top_edges_faithfulness_and_size(tiny_dir, tmp_path):
    args = [
        "patch",
        "--model",
        tiny_dir,
        "--clean",
        CLEAN,
        "--corrupt",
        CORRUPT,
        "--answer",
        " Mary",
        "--wrong",
        " John",
    ]
    r = runner.invoke(
        app,
        [
            *args,
            "--grid",
            "heads",
            "--edges",
            "--ig-steps",
            "2",
            "--top-k",
            "5",
            "--top-k",
            "1000000",
            "--json",
            "--out",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.output
    e = json.loads(r.stdout)["edges"]
    assert e["method"] == "eap-ig" and e["ig_steps"] == 2 and len(e["top_edges"]) == 10
    small, full = e["circuits"]
    assert small["n_edges"] == 5 and small["n_nodes"] >= 2
    assert full["n_edges"] == e["n_edges"] and full["faithfulness"] == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "edges.json").exists() and (tmp_path / "edges.safetensors").exists()
    page = (tmp_path / "report.html").read_text()
    assert 'id="edges"' in page and "Edge attribution patching" in page and e["top_edges"][0][0].split("->")[0] in page
    mean = runner.invoke(app, [*args, "--edges", "--edge-reference", "mean", "--json", "--out", str(tmp_path / "m")])
    assert mean.exit_code == 0, mean.output
    assert json.loads(mean.stdout)["edges"]["reference"] == "mean"
    wrong = runner.invoke(app, [*args, "--edges", "--edge-reference", "zero", "--out", str(tmp_path / "z")])
    assert wrong.exit_code != 0 and "corrupt or mean" in _said(wrong)
    bad = runner.invoke(app, [*args, "--edges", "--ig-steps", "0", "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "--ig-steps must be at least 1" in _said(bad)
