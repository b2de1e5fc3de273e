"""``interplab trace`` on a tiny model with a tokenizer: a user's own fact with resampled subjects (given, from a
file, or the built-in subjects of any relation), and the headline peaks."""

from __future__ import annotations

import json

import pytest
from tiny_tokenized import make_tiny_tokenized_model, task_text
from typer.testing import CliRunner

from interplab.cli import app

runner = CliRunner()
FUJI = ["--prompt", "Mount Fuji is the tallest mountain in", "--subject", "Mount Fuji", "--answer", " Japan"]
SUBJECT_BUCKETS = ("subject_first", "subject_middle", "subject_last")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_trace"), vocab_size=1200, extra_text=task_text())


def _trace(tiny_dir, out, *extra):
    args = ["trace", "--model", tiny_dir, *FUJI, "--window", "2", "--samples", "2", "--no-refine", "--json"]
    return runner.invoke(app, [*args, "--out", str(out), *extra])


def test_cli_trace_resamples_a_users_fact_with_given_subjects(tiny_dir, tmp_path):
    # "France" is fewer tokens than "Mount Fuji" here: tried are the other three, the first two used
    r = _trace(
        tiny_dir,
        tmp_path / "a",
        "--corruption",
        "resample",
        "--resample-subjects",
        "Kobe Bryant, France,Taj Mahal,Tiger Woods",
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert (h["n_resamples_tried"], h["n_resamples_usable"], h["n_resamples_used"]) == (3, 3, 2)
    assert h["resampled_subjects"] == ["Kobe Bryant", "Taj Mahal"]
    assert h["peak"]["component"] == "resid" and h["peak"]["position"] in SUBJECT_BUCKETS
    assert {"mlp", "attn"} <= set(h["peaks"]) and "trivial" in h["peak_overall"]
    assert "Peaks" in (tmp_path / "a" / "report.html").read_text()
    f = tmp_path / "subjects.txt"
    f.write_text("# subjects of the same token length\nTiger Woods\n\nTaj Mahal\n", encoding="utf-8")
    r = _trace(tiny_dir, tmp_path / "b", "--corruption", "resample", "--resample-subjects", f"@{f}")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["resampled_subjects"] == ["Tiger Woods", "Taj Mahal"]


def test_cli_trace_resample_falls_back_to_builtin_subjects_of_any_relation(tiny_dir, tmp_path):
    r = _trace(tiny_dir, tmp_path / "a", "--corruption", "resample")
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["n_resamples_tried"] >= h["n_resamples_usable"] >= h["n_resamples_used"] == 2
    r = _trace(tiny_dir, tmp_path / "t", "--corruption", "resample")  # the table printout
    assert r.exit_code == 0, r.output


def test_cli_trace_resample_errors_say_what_to_pass(tiny_dir, tmp_path):
    def said(*extra: str) -> str:  # exit 2, the message with the console's line wrapping undone
        r = _trace(tiny_dir, tmp_path / str(len(list(tmp_path.iterdir()))), *extra)
        assert r.exit_code == 2, r.output
        return " ".join(r.output.split())

    out = said("--corruption", "resample", "--resample-subjects", "France,Peru")
    assert "--resample-subjects" in out and "7 token(s)" in out
    assert "needs --corruption resample" in said("--resample-subjects", "Taj Mahal")
    assert "no file" in said("--corruption", "resample", "--resample-subjects", f"@{tmp_path / 'none.txt'}")
    assert "holds no subject" in said("--corruption", "resample", "--resample-subjects", " , ")


def test_cli_trace_on_worker_processes_gives_the_serial_headline(tiny_dir, tmp_path):
    serial = _trace(tiny_dir, tmp_path / "s")
    split = _trace(tiny_dir, tmp_path / "p", "--backend", "process", "--max-parallel", "2")
    assert serial.exit_code == 0 and split.exit_code == 0, split.output
    a, b = json.loads(serial.stdout), json.loads(split.stdout)
    drop = {"seconds", "run_dir", "report"}
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    assert _trace(tiny_dir, tmp_path / "x", "--backend", "spark").exit_code == 2


def test_cli_trace_reads_a_users_facts_file_and_keeps_the_known_ones(tiny_dir, tmp_path):
    import interplab
    from interplab.models.scoring import last_token_logits
    from interplab.tasks.facts import all_facts

    m = interplab.load(tiny_dir)
    facts = all_facts()[:40]
    top = [int(r.argmax()) for rows in last_token_logits(m, [x.prompt for x in facts], 8, True) for r in rows]
    # the random model's top-1 token as the answer, where it decodes to a string that tokenizes back to it
    decoded = [(x, m.tokenizer.decode([t]), t) for x, t in zip(facts, top)]
    known = [(x, a) for x, a, t in decoded if m.first_token_id(a, "answer")[0] == t][:2]
    (f1, a1), (f2, a2) = known
    rows = [
        {"prompt": f1.prompt, "subject": f1.subject, "answer": a1},
        {"template": f2.template, "subject": f2.subject, "answer": a2},
        {"prompt": f1.prompt, "subject": f1.subject, "answer": " zzzz-not-predicted"},
    ]
    f = tmp_path / "facts.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    args = ["trace", "--model", tiny_dir, "--facts-file", str(f), "--window", "2", "--samples", "2", "--no-refine"]
    r = runner.invoke(app, [*args, "--json", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["facts_known"] == "2/3" and h["n_facts"] == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(rows[0]) + "\n" + json.dumps({"prompt": "No subject here", "subject": "X", "answer": " Y"})
    )
    r = runner.invoke(app, [*args[:3], "--facts-file", str(bad), "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "line 2" in " ".join(r.output.split()) and "does not occur" in r.output
