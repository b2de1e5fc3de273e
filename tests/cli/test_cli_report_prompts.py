"""``interplab report --prompt`` / ``--prompts FILE``: the lens, attention viewer and DLA on the user's text
(escaped in the page), with the first prompt's answer and wrong answer; misplaced options refused."""

from __future__ import annotations

import json

from tiny_tokenized import XSS_TOKEN
from typer.testing import CliRunner

from interplab.cli import app

runner = CliRunner()


def test_report_on_a_users_prompt_runs_lens_attention_and_dla_on_it(report_model, tmp_path):
    prompt = f"{XSS_TOKEN} When Mary and John went to the store, John gave a drink to"
    args = ["report", "--model", str(report_model.source), "--sections", "dla", "--prompt", prompt]
    r = runner.invoke(app, [*args, "--answer", " Mary", "--wrong", " John", "--json", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert list(json.loads(r.stdout)["logit_lens"]) == ["prompt1"]
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert XSS_TOKEN not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "logit(&#x27; Mary&#x27;) − logit(&#x27; John&#x27;)" in page or "logit(' Mary') − logit(' John')" in page
    dla = json.loads(next(tmp_path.glob("dla*.json")).read_text())
    assert "Mary" in json.dumps(dla)


def test_report_prompts_file_and_the_models_own_answer(report_model, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(
        json.dumps({"name": "tower", "prompt": "The Eiffel Tower is located in the city of"})
        + "\n"
        + json.dumps({"prompt": "The quick brown fox", "answer": " jumps"})
        + "\n",
        encoding="utf-8",
    )
    args = ["report", "--model", str(report_model.source), "--sections", "dla", "--prompts", str(f), "--json"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.stdout)["logit_lens"]) == {"tower", "prompt2"}
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "model&#x27;s logit is" in page or "model's logit is" in page  # DLA of the top prediction, no distractor
    t = tmp_path / "p.txt"
    t.write_text("first prompt\n\nsecond prompt\n", encoding="utf-8")
    r = runner.invoke(app, ["report", "--model", str(report_model.source), "--sections", "none", "--prompts", str(t)])
    assert r.exit_code == 0, r.output


def test_report_prompt_options_that_cannot_be_used_are_refused(report_model, tmp_path):
    r = runner.invoke(app, ["report", "--model", str(report_model.source), "--answer", " Paris"])
    assert r.exit_code == 2 and "go with --prompt" in " ".join(r.output.split())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"answer": " x"}\n', encoding="utf-8")
    r = runner.invoke(app, ["report", "--model", str(report_model.source), "--prompts", str(bad)])
    assert r.exit_code == 2 and "line 2" in " ".join(r.output.split())
