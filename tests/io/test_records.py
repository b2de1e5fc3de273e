"""Users' rows from JSONL and CSV files: every row checked, a bad one named by file and line number."""

from __future__ import annotations

import re

import pytest

from interplab.io.records import RecordError, read_records
from interplab.tasks.facts import read_facts


def test_jsonl_and_csv_rows_carry_their_line_numbers(tmp_path):
    j = tmp_path / "a.jsonl"
    j.write_text('{"x": "1", "y": 2}\n\n{"x": "3", "y": 4}\n', encoding="utf-8")
    assert read_records(j, ["x", "y"]) == [{"x": "1", "y": 2, "line": 1}, {"x": "3", "y": 4, "line": 3}]
    c = tmp_path / "a.csv"
    c.write_text("x,y\n1,2\n3,4\n", encoding="utf-8")
    assert [r["line"] for r in read_records(c, ["x"])] == [2, 3]


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("bad.jsonl", '{"x": 1}\n{"x": \n', "line 2: not valid JSON"),
        ("missing.jsonl", '{"x": 1}\n{"z": 1}\n', "line 2: the row lacks ['x']"),
        ("list.jsonl", "[1, 2]\n", "line 1: a row must be a JSON object"),
        ("head.csv", "z\n1\n", "line 1: the header lacks ['x']"),
        ("empty.csv", "x,y\n", "holds no rows"),
        ("data.txt", "x\n", "unknown file type '.txt'"),
    ],
)
def test_bad_files_say_where_and_what(tmp_path, name, text, said):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    with pytest.raises(RecordError, match=re.escape(said)):
        read_records(p, ["x"])
    with pytest.raises(RecordError, match="no such file"):
        read_records(tmp_path / "none.jsonl", ["x"])


def test_facts_from_prompts_or_templates(tmp_path):
    p = tmp_path / "f.jsonl"
    p.write_text(
        '{"prompt": "The Louvre is in", "subject": "The Louvre", "answer": " Paris"}\n'
        '{"template": "{} is in", "subject": "Rome", "answer": " Italy"}\n'
        '{"template": "no slot", "subject": "Rome", "answer": " Italy"}\n',
        encoding="utf-8",
    )
    with pytest.raises(RecordError, match="line 3: the template must hold exactly one"):
        read_facts(p)
    p.write_text(p.read_text().splitlines()[0] + "\n" + p.read_text().splitlines()[1] + "\n", encoding="utf-8")
    a, b = read_facts(p)
    assert (a.prompt, a.subject, b.prompt) == ("The Louvre is in", "The Louvre", "Rome is in")
