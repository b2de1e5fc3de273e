"""Agreement of two labellings of the same samples (log-probability vs classifier on the greedy answer), on planted
frames whose agreement, kappa and confusion counts are known by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from interplab.evals.analysis import labelling_agreement


def _frame(labels: list[str], values: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"s{i}" for i in range(len(labels))],
            "judgement": labels,
            "value": values,
            "cluster": [f"c{i // 2}" for i in range(len(labels))],
        }
    )


def test_planted_agreement_kappa_and_confusion():
    a = _frame(["agree"] * 4 + ["disagree"] * 4, [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    # 3 of 4 agree-agree, 1 agree-disagree, 2 disagree-disagree, 1 disagree-agree, 1 disagree-ambiguous
    b_labels = ["agree", "agree", "agree", "disagree", "disagree", "disagree", "agree", "ambiguous"]
    b = _frame(b_labels, [1, 1, 1, 0, 0, 0, 1, 0.5])
    got = labelling_agreement(a, b.iloc[::-1])  # matched by id, not by row order
    assert got["n"] == 8 and got["n_decided"] == 7
    assert got["agreement"]["effect"] == pytest.approx(5 / 8, abs=1e-4)
    assert got["agreement_decided"]["effect"] == pytest.approx(5 / 7, abs=1e-4)
    pa, pb = {"agree": 4 / 7, "disagree": 3 / 7}, {"agree": 4 / 7, "disagree": 3 / 7}
    chance = sum(pa[k] * pb[k] for k in pa)
    assert got["kappa"] == pytest.approx((5 / 7 - chance) / (1 - chance), abs=1e-4)
    assert got["confusion"] == {
        "agree|agree": 3,
        "agree|disagree": 1,
        "disagree|disagree": 2,
        "disagree|agree": 1,
        "disagree|ambiguous": 1,
    }


def test_identical_labellings_agree_fully_and_disjoint_runs_are_an_error():
    a = _frame(["agree", "disagree", "agree", "disagree"], [0.9, 0.1, 0.8, 0.2])
    got = labelling_agreement(a, a)
    assert got["agreement"]["effect"] == 1.0 and got["kappa"] == 1.0 and got["value_corr"] == 1.0
    other = a.assign(id=[f"x{i}" for i in range(4)])
    with pytest.raises(ValueError, match="same items"):
        labelling_agreement(a, other)


def test_kappa_is_none_when_both_labellings_use_one_label_and_zero_when_each_uses_another():
    a = _frame(["agree"] * 4, [0.9, 0.8, 0.7, 0.6])
    assert labelling_agreement(a, a)["kappa"] is None  # chance agreement 1: kappa undefined
    b = a.assign(judgement=["disagree"] * 4)
    assert labelling_agreement(a, b)["kappa"] == 0.0  # chance agreement 0, observed 0
