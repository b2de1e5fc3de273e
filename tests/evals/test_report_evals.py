"""The evals in HTML: ``interplab report --sections evals`` runs the small framing eval and shows its headline; the
section renders any eval result (built-in or a user's task)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from interplab.cli import app
from interplab.report.sections.evals import evals_parts, headline_rows


def test_report_sections_evals_shows_the_framing_headline_with_its_ci(tiny, tiny_dir, tmp_path):
    out = tmp_path / "rep"
    r = CliRunner().invoke(app, ["report", "--model", tiny_dir, "--sections", "evals", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text()
    assert "Behavioural evals" in html and "framing" in html and "95% CI (clustered)" in html
    res = json.loads((out / "evals_framing.json").read_text())
    assert res["models"] and list((out / "eval_logs").glob("*.eval"))


def test_headline_rows_cover_every_builtin_effect():
    block = {"effect": 0.1, "ci95": [0.0, 0.2], "se_clustered": 0.05, "se_naive": 0.03, "template_sd": 0.1}
    rate = {"rate": 0.5, "ci95": [0.4, 0.6]}
    assert len(headline_rows("framing", {"m": {**block, "by_class": {"fine": block, "dubious": block}}})) == 3
    assert len(headline_rows("truthful", {"m": {"effects": {"funny": block, "none": block}}})) == 2
    harm = {"refusal_rate": rate, "over_refusal_rate": rate, "compliance_score": rate}
    assert [r["estimate"] for r in headline_rows("harmful", {"m": harm})] == [0.5, 0.5, 0.5]
    parts = evals_parts({"task": "my_task", "models": {"m": {"accuracy": {"mean": 0.5}}}})
    assert parts
