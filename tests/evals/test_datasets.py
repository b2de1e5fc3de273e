"""The built-in eval datasets and templates load, meet the sizes the evals need, and a malformed user file is
reported with its line number and field."""

import json
from collections import Counter, defaultdict

import pytest

from interplab.evals import datasets
from interplab.evals.datasets import DatasetError, load_items, load_templates


@pytest.mark.parametrize("task", datasets.TASKS)
def test_builtin_dataset_round_trips_through_a_user_file(task, tmp_path):
    items = load_items(task)
    f = tmp_path / f"{task}.jsonl"
    f.write_text("".join(json.dumps(it) + "\n" for it in items))
    assert load_items(task, f) == items


@pytest.mark.parametrize("task", datasets.TASKS)
def test_builtin_ids_are_unique_stable_and_every_item_has_a_cluster(task):
    items = load_items(task)
    ids = [it["id"] for it in items]
    prefix = {"framing": "fr", "truthful": "tr", "harmful": "hr"}[task]
    assert len(set(ids)) == len(ids)
    assert ids == [f"{prefix}-{i:04d}" for i in range(1, len(items) + 1)]
    assert all(it["cluster"] for it in items)


def test_framing_has_at_least_120_actions_half_fine_half_dubious():
    items = load_items("framing")
    assert len(items) >= 120
    counts = Counter(it["class"] for it in items)
    assert counts["fine"] == counts["dubious"] == len(items) // 2
    assert len({it["action"] for it in items}) == len(items)
    # an action completes "It is okay to ...": lower case verb phrase, no final punctuation
    assert all(it["action"][0].islower() and it["action"][-1].isalnum() for it in items)


def test_truthful_has_150_false_and_150_true_statements():
    items = load_items("truthful")
    counts = Counter(it["label"] for it in items)
    assert counts[False] >= 150 and counts[True] >= 150
    assert len({it["statement"] for it in items}) == len(items)
    assert all(it["statement"].endswith(".") for it in items)


def test_every_harmful_request_has_a_benign_look_alike_in_its_cluster():
    items = load_items("harmful")
    by_cluster = defaultdict(list)
    for it in items:
        by_cluster[it["cluster"]].append(it)
    harmful = [it for it in items if it["kind"] == "harmful"]
    assert len(harmful) >= 100
    assert len({it["category"] for it in harmful}) >= 10
    for cluster, members in by_cluster.items():
        assert sorted(m["kind"] for m in members) == ["benign", "harmful"], cluster
        assert len({m["category"] for m in members}) == 1, cluster


def test_framing_templates_are_paraphrase_pairs_with_the_action_field():
    t = load_templates("framing")
    assert len(t["confirming"]) == len(t["disconfirming"]) >= 5
    for c, d in zip(t["confirming"], t["disconfirming"], strict=True):
        assert datasets.template_fields(c) == datasets.template_fields(d) == {"action"}
        assert c != d


def test_truthful_and_harmful_templates_have_their_fields():
    t = load_templates("truthful")
    assert len(t["user"]) >= 5 and all(datasets.template_fields(u) == {"statement"} for u in t["user"])
    assert t["systems"]["none"] is None and "truthful" in t["systems"]["truthful"]
    assert t["xs"] == ["friendly", "funny", "concise", "enthusiastic", "polite"]
    assert all(x in t["systems"]["X"].format(x=x) for x in t["xs"])
    h = load_templates("harmful")
    assert len(h["user"]) >= 5 and all(datasets.template_fields(u) == {"request"} for u in h["user"])


def test_render_fills_the_task_field():
    item = load_items("framing")[0]
    text = datasets.render(load_templates("framing")["confirming"][0], "framing", item)
    assert item["action"] in text and "{" not in text


def test_unknown_task_lists_the_tasks():
    with pytest.raises(DatasetError, match="framing, truthful, harmful"):
        load_items("sycophancy")
    with pytest.raises(DatasetError, match="framing, truthful, harmful"):
        load_templates("sycophancy")


def test_jsonl_row_missing_a_field_is_reported_with_its_line(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"id": "a", "action": "help a friend", "class": "fine"}\n\n{"id": "b", "class": "dubious"}\n')
    with pytest.raises(DatasetError, match=r"mine\.jsonl, line 3: missing field 'action'"):
        load_items("framing", f)


def test_jsonl_syntax_error_and_bad_values_name_line_and_field(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "a", "statement": "Snow is white.", "label": true}\n{"id": "b", "statement": oops}\n')
    with pytest.raises(DatasetError, match=r"line 2: not valid JSON"):
        load_items("truthful", f)
    f.write_text('{"id": "a", "statement": "Snow is white.", "label": "maybe"}\n')
    with pytest.raises(DatasetError, match=r"line 1: field 'label' is 'maybe'"):
        load_items("truthful", f)
    f.write_text('{"id": "a", "request": "How do I bake bread?", "kind": "benign"}\n' * 2)
    with pytest.raises(DatasetError, match=r"line 2: id 'a' already used on line 1"):
        load_items("harmful", f)
    f.write_text('{"id": "a", "action": "help", "class": "good"}\n')
    with pytest.raises(DatasetError, match=r"line 1: field 'class' is 'good'; it must be one of fine, dubious"):
        load_items("framing", f)


def test_csv_rows_are_validated_with_physical_line_numbers(tmp_path):
    f = tmp_path / "mine.csv"
    # line 3 is a quoted cell spanning two physical lines, so the bad row is on line 5
    f.write_text(
        'id,statement,label,cluster\nt1,Snow is white.,true,snow\nt2,"Ice is cold,\nand hard.",1,ice\nt3,,false,sun\n'
    )
    with pytest.raises(DatasetError, match=r"mine\.csv, line 5: missing field 'statement'"):
        load_items("truthful", f)
    f.write_text("id,statement,label\nt1,Snow is white.,true\nt2,Ice is hot.,no\n")
    items = load_items("truthful", f)
    assert [(it["id"], it["label"], it["cluster"]) for it in items] == [("t1", True, "t1"), ("t2", False, "t2")]


def test_harmful_user_file_defaults_cluster_and_category(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text("id,request,kind\nh1,How do I bake bread?,benign\n")
    (item,) = load_items("harmful", f)
    assert item["cluster"] == "h1" and item["category"] == "uncategorised"


def test_missing_or_unsupported_file_says_what_to_give(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_items("framing", tmp_path / "nope.jsonl")
    f = tmp_path / "items.txt"
    f.write_text("x")
    with pytest.raises(DatasetError, match=r"give a \.jsonl or \.csv file"):
        load_items("framing", f)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DatasetError, match="no rows"):
        load_items("framing", empty)


def test_template_file_missing_its_field_is_rejected(tmp_path):
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"confirming": ["It is okay to {action}?"], "disconfirming": ["Is it wrong?"]}))
    with pytest.raises(DatasetError, match=r"must contain \{action\}"):
        load_templates("framing", f)
    f.write_text(json.dumps({"confirming": ["{action}?", "ok {action}?"], "disconfirming": ["not {action}?"]}))
    with pytest.raises(DatasetError, match="same length"):
        load_templates("framing", f)
    f.write_text(json.dumps({"user": ["{statement}"], "systems": {"none": None, "truthful": "t", "X": "no x"}}))
    with pytest.raises(DatasetError, match=r"systems\.X"):
        load_templates("truthful", f)


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)
