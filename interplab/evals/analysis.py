"""Headlines of the built-in evals from their Inspect logs: paired effects with clustered 95% CIs, the naive SE beside
the clustered one, the template spread and the minimum detectable effect (Miller 2024; the estimators live in
:mod:`interplab.stats`).

:func:`sample_frame` turns a log into one row per sample (item, cluster, template, condition, score and the scorer's
metadata); :func:`headline` computes the task's headline from that frame:

- framing: ``effect`` = mean over (action, template) of ``okay(confirming) − okay(disconfirming)``, clustered by
  action, with ``per_template``, ``template_sd`` and ``by_class`` (fine / dubious), and ``p_okay`` per condition;
- truthful: per X, ``effect`` = mean over (statement, template) of ``correct(X and truthful) − correct(truthful)``,
  with the same for the no-system-prompt baseline (``"none"``), and per condition the rate of calling out false
  statements (``callout_rate``) and of accepting true ones (``accept_rate``);
- harmful: ``refusal_rate`` (harmful requests), ``over_refusal_rate`` (benign look-alikes) and ``compliance_score``
  (harmful requests, ``(1 − refused) · specificity``), each clustered by request pair, with the template spread of the
  refusal rate and the paired gap ``refusal(harmful) − refusal(benign)`` per pair and template.

:func:`labelling_agreement` compares two labellings of the same samples (framing or truthful by log-probability and
by the classifier on the greedy answer): per-sample agreement with a clustered CI, Cohen's kappa, the confusion table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from interplab.stats import clustered_mean, paired_difference, template_spread, wilson_interval

if TYPE_CHECKING:
    from inspect_ai.log import EvalLog

__all__ = ["framing_shift", "headline", "labelling_agreement", "sample_frame"]


def sample_frame(log: EvalLog) -> Any:
    """One row per scored sample of ``log``: its metadata, ``value`` (the score) and the score's metadata."""
    import pandas as pd

    rows = []
    for s in log.samples or []:
        if not s.scores:
            continue
        sc = next(iter(s.scores.values()))
        v = sc.value
        if isinstance(v, dict):
            continue
        row = {k: v for k, v in (s.metadata or {}).items() if not isinstance(v, (list, dict))}
        for k, val in (sc.metadata or {}).items():  # the scorer's fields never overwrite the sample's own
            if not isinstance(val, (list, dict)):
                row[k if k not in row else f"score_{k}"] = val
        row.update({"id": str(s.id), "value": float(v), "answer": sc.answer, "completion": s.output.completion})  # type: ignore[arg-type]
        rows.append(row)
    return pd.DataFrame(rows)


def _r(x: float, d: int = 4) -> float:
    return round(float(x), d)


def _clusters(c: Any) -> list[str] | None:
    """Cluster labels, or None (every row its own cluster) when there are fewer than 2 clusters to cluster by."""
    labels = [str(x) for x in c]
    return labels if len(set(labels)) >= 2 else None


def _paired(df: Any, a: str, b: str, value: str = "value") -> tuple[Any, Any]:
    """Paired differences ``a − b`` per (item, template), clustered by the item's cluster."""
    keys = ["item", "template"]
    pa = df[df.condition == a].set_index(keys)
    pb = df[df.condition == b].set_index(keys)
    both = pa.join(pb[[value]].rename(columns={value: f"{value}_b"}), how="inner")
    if len(both) < 2:
        raise ValueError(f"fewer than 2 items have both conditions {a!r} and {b!r}; nothing to pair.")
    d = both[value] - both[f"{value}_b"]
    out = both.reset_index().assign(diff=d.to_numpy())
    return paired_difference(both[value].to_numpy(), both[f"{value}_b"].to_numpy(), _clusters(both["cluster"])), out


def _effect_block(est: Any, pairs: Any) -> dict[str, Any]:
    sp = template_spread(pairs["diff"].to_numpy(), pairs["item"].tolist(), pairs["template"].tolist())
    return {
        "n_items": int(pairs["item"].nunique()),
        "n_pairs": len(pairs),
        **est.to_dict(),
        "template_sd": _r(sp.sd),
        "template_sd_observed": _r(sp.sd_observed),
        "per_template": {str(k): _r(v) for k, v in sp.per_template.items()},
    }


def _rate(df: Any, column: str = "value") -> dict[str, Any]:
    if len(df) < 2:
        return {"rate": _r(df[column].mean()) if len(df) else None, "ci95": [None, None], "n": len(df)}
    est = clustered_mean(df[column].to_numpy(dtype=np.float64), _clusters(df["cluster"]))
    sp = template_spread(df[column].to_numpy(dtype=np.float64), df["item"].tolist(), df["template"].tolist())
    d = est.to_dict()
    d["rate"] = d.pop("effect")
    x = df[column].to_numpy(dtype=np.float64)
    if np.isin(x, (0.0, 1.0)).all():  # a 0/1 outcome: the Wilson interval too, which does not collapse at 0 or 1
        lo, hi = wilson_interval(int(x.sum()), len(x))
        d["ci95_wilson"] = [_r(lo), _r(hi)]
    return {**d, "template_sd": _r(sp.sd), "per_template": {str(k): _r(v) for k, v in sp.per_template.items()}}


def framing_headline(df: Any) -> dict[str, Any]:
    est, pairs = _paired(df, "confirming", "disconfirming")
    out = _effect_block(est, pairs)
    out["by_class"] = {}
    for cls in sorted(pairs["class"].unique()):
        sub = pairs[pairs["class"] == cls]
        if len(sub) >= 2:
            e = paired_difference(sub["value"], sub["value_b"], _clusters(sub["cluster"]))
            out["by_class"][str(cls)] = _effect_block(e, sub)
    out["p_okay"] = {c: _r(df[df.condition == c]["value"].mean()) for c in ("confirming", "disconfirming")}
    if "judgement" in df:
        out["ambiguous_rate"] = _r((df["judgement"] == "ambiguous").mean())
    return out


def truthful_headline(df: Any) -> dict[str, Any]:
    conds = list(dict.fromkeys(df["condition"]))
    effects = {}
    for c in conds:
        if c == "truthful":
            continue
        est, pairs = _paired(df, c, "truthful")
        block = _effect_block(est, pairs)
        for lab, key in ((False, "callout_delta"), (True, "accept_delta")):
            sub = pairs[pairs["label"] == lab]
            if len(sub) >= 2:
                e = paired_difference(sub["value"], sub["value_b"], _clusters(sub["cluster"]))
                block[key] = {"effect": _r(e.mean), "ci95": [_r(e.ci[0]), _r(e.ci[1])]}
        effects[c] = block
    rates = {}
    for c in conds:
        sub = df[df.condition == c]
        rates[c] = {
            "callout_rate": _rate(sub[~sub["label"].astype(bool)]),
            "accept_rate": _rate(sub[sub["label"].astype(bool)]),
        }
    first = next(iter(effects.values()), {})
    return {
        "n_items": int(df["item"].nunique()),
        "effects": effects,
        "rates": rates,
        "template_sd": first.get("template_sd"),
    }


def harmful_headline(df: Any) -> dict[str, Any]:
    harm, benign = df[df.kind == "harmful"], df[df.kind == "benign"]
    out: dict[str, Any] = {
        "n_items": int(df["item"].nunique()),
        "refusal_rate": _rate(harm),
        "over_refusal_rate": _rate(benign),
        "compliance_score": _rate(harm, "compliance"),
    }
    # the paired gap: a harmful request against its benign look-alike (same pair, same template)
    h = harm.groupby(["cluster", "template"])["value"].mean()
    b = benign.groupby(["cluster", "template"])["value"].mean()
    both = h.to_frame("h").join(b.to_frame("b"), how="inner").reset_index()
    if len(both) >= 2:
        e = paired_difference(both["h"], both["b"], _clusters(both["cluster"]))
        out["refusal_gap"] = e.to_dict()
    return out


def headline(task: str, df: Any) -> dict[str, Any]:
    """The headline of built-in ``task`` from its :func:`sample_frame`."""
    if df.empty:
        raise ValueError(f"the {task} log has no scored samples.")
    fn = {"framing": framing_headline, "truthful": truthful_headline, "harmful": harmful_headline}[task]
    return fn(df)


def framing_shift(base: Any, other: Any) -> dict[str, Any]:
    """How the framing effect moves between two runs of the same items and templates (a steering scale against no
    steering): the paired change ``effect(other) − effect(base)`` per (action, template), clustered by action."""
    _, a = _paired(base, "confirming", "disconfirming")
    _, b = _paired(other, "confirming", "disconfirming")
    both = a.set_index(["item", "template"])[["diff", "cluster"]].join(
        b.set_index(["item", "template"])[["diff"]].rename(columns={"diff": "diff_other"}), how="inner"
    )
    if len(both) < 2:
        raise ValueError("the two runs share fewer than 2 (action, template) pairs; run them on the same items.")
    est = paired_difference(both["diff_other"].to_numpy(), both["diff"].to_numpy(), _clusters(both["cluster"]))
    return {"n_pairs": len(both), **est.to_dict()}


def labelling_agreement(a: Any, b: Any) -> dict[str, Any]:
    """Per-sample agreement of two labellings of the same samples (:func:`sample_frame`\\ s of two runs, matched by
    sample id), e.g. the yes/no log-probability reading (``a``) and the classifier on the greedy answer (``b``).

    ``agreement``: the share of samples whose ``judgement`` is the same in both, with a 95% CI clustered by item
    cluster (an ambiguous label counts as a disagreement); ``agreement_decided`` and ``kappa`` (Cohen 1960, chance
    agreement from each labelling's own label rates) over the samples neither labelling calls ambiguous;
    ``confusion``: counts of (label a, label b); ``value_corr``: Pearson correlation of the two scores."""
    keep = ["judgement", "value", "cluster"]
    other = b.set_index("id")[["judgement", "value"]].rename(columns={"judgement": "judgement_b", "value": "value_b"})
    both = a.set_index("id")[keep].join(other, how="inner")
    if len(both) < 2:
        raise ValueError("the two runs share fewer than 2 samples: run both labellings on the same items, templates.")
    same = (both["judgement"] == both["judgement_b"]).to_numpy(dtype=np.float64)
    out: dict[str, Any] = {"n": len(both), "agreement": clustered_mean(same, _clusters(both["cluster"])).to_dict()}
    decided = both[(both["judgement"] != "ambiguous") & (both["judgement_b"] != "ambiguous")]
    out["n_decided"] = len(decided)
    if len(decided) >= 2:
        d_same = (decided["judgement"] == decided["judgement_b"]).to_numpy(dtype=np.float64)
        out["agreement_decided"] = clustered_mean(d_same, _clusters(decided["cluster"])).to_dict()
        from sklearn.metrics import cohen_kappa_score

        ja, jb = decided["judgement"].astype(str).tolist(), decided["judgement_b"].astype(str).tolist()
        # one label throughout both labellings: chance agreement is 1 and kappa undefined
        out["kappa"] = _r(cohen_kappa_score(ja, jb)) if len(set(ja) | set(jb)) > 1 else None
    counts = both.groupby(["judgement", "judgement_b"]).size()
    out["confusion"] = {f"{i}|{j}": int(v) for (i, j), v in counts.items()}
    va, vb = both["value"].to_numpy(dtype=np.float64), both["value_b"].to_numpy(dtype=np.float64)
    out["value_corr"] = _r(np.corrcoef(va, vb)[0, 1]) if va.std() > 0 and vb.std() > 0 else None
    return out
