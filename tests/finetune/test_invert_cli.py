"""``interplab invert`` (CLI and report) on the tiny tokenized Llama: the --json contract, clear errors for a layer
out of range and invalid dims, and a report whose token strings are escaped."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from interplab.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()
SMALL = ["--seq-len", "8", "--train-seqs", "48", "--test-seqs", "6", "--steps", "8", "--k", "2", "--no-progress"]
SMALL += ["--inverter-d-model", "32", "--inverter-layers", "1", "--batch-size", "16"]


def test_invert_json_has_the_contract_keys_and_the_layer_curve(tiny_tok_dir, tmp_path) -> None:
    out = tmp_path / "run"
    args = ["invert", "--model", tiny_tok_dir, "--layer", "1", "--layers", "0,2", "--search", "1", "--json"]
    r = runner.invoke(app, [*args, *SMALL, "--out", str(out)])
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["layer"] == 1
    for key in ("exact_token_recovery", "token_f1", "search_exact_match"):
        assert 0.0 <= h[key] <= 1.0
    assert h["search_exact_match"] == 1.0  # the search upper bound is exact on an injective random model
    assert [row["layer"] for row in h["curve_vs_layer"]] == [0, 1, 2]
    assert (out / "inversion.json").exists() and (out / "report.html").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "3"], "out of range"),
        (["--layer", "-1"], "out of range"),
        (["--layer", "1", "--dims", "0:999"], "outside"),
        (["--layer", "1", "--dims", "upper-third"], "not readable"),
        (["--layer", "1", "--dims-fractions", "1,1.5"], r"\(0, 1\]"),
        (["--layer", "1", "--layers", "0,x"], "integers"),
    ],
)
def test_bad_layer_or_dims_exit_2_with_a_clear_message(tiny_tok_dir, tmp_path, extra, message) -> None:
    r = runner.invoke(app, ["invert", "--model", tiny_tok_dir, *extra, *SMALL, "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert re.search(message, " ".join(r.output.split()))


def test_report_escapes_token_strings_and_shows_guesses(tmp_path) -> None:
    from interplab.finetune.invert import InversionResult
    from interplab.report.sections.invert import invert_report, token_label

    evil = "</script><script>alert(1)</script>"
    run = {
        "name": "L0-all-all",
        "layer": 0,
        "dims": "all",
        "n_dims": 4,
        "dims_fraction": 1.0,
        "positions": "all",
        "exact_token_recovery": 0.5,
        "exact_token_recovery_ci": [0.2, 0.8],
        "sequence_exact_match": 0.0,
        "token_f1": 0.5,
        "best_of_k_token_recovery": 1.0,
        "best_of_k_sequence_exact_match": 1.0,
        "oov_rate": 0.0,
        "curve": [{"step": 0, "test_loss": 3.0}],
    }
    ex = {
        "run": "L0-all-all",
        "original": [evil, " a\n"],
        "original_ids": [1, 2],
        "guesses": [[evil, "b"], [evil, " a\n"]],
        "guess_ids": [[1, 3], [1, 2]],
    }
    res = InversionResult(
        "m", 2, 4, 2, "L0-all-all", [run], [ex], None, {"k": 2, "n_layers": 1, "d_model": 8, "steps": 1, "n_train": 4}
    )
    page = invert_report(res).to_html()
    assert "<script>alert(1)" not in page and "&lt;/script&gt;&lt;script&gt;alert(1)" in page
    assert token_label(" a\n") == "␣a\\n"
    assert page.count('class="ipl-tok"') == 6
