"""Report section of an SAE run (:class:`interplab.analyses.sae.SAEResult`): metrics and controls, and the feature
browser (every token string escaped).

>>> add_sae_sections(report, result)   # what ``interplab sae train`` does
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from interplab.report.html import Html, Report, escape, figure, table, text

if TYPE_CHECKING:
    from interplab.analyses.sae import SAEResult

__all__ = ["add_sae_sections", "browser_html", "sae_features_report", "sae_parts"]

# the columns of the controls table, in this order
_CONTROL_COLUMNS = ("l0", "test_explained_variance", "pca_topk_ev", "pca_top_ev", "ev_gap_vs_pca_topk", "ev_gap_se")
_CONTROL_COLUMNS += ("test_dead_frac", "recovery", "mmcs", "ce_score")


def add_sae_sections(report: Report, result: SAEResult) -> Report:
    """Add the sections of an SAE run to ``report``: ``id="sae"`` (metrics and controls) and, when the result has
    browser contexts, ``id="browser"`` (top-activating held-out contexts)."""
    report.section("SAE metrics and controls", *sae_parts(result), id="sae")
    if result.browser:
        report.section(
            "Feature browser: top-activating held-out contexts",
            browser_html(result.browser, result.settings.get("browser_density")),
            id="browser",
        )
    return report


def sae_parts(res: SAEResult) -> list:
    """The metrics table, training and EV figure, PCA comparison and controls table of an SAE run."""
    h = res.headline()
    rows = [
        {"metric": k, "train": res.main["train"].get(k), "held-out": res.main["test"].get(k)}
        for k in ("l0", "explained_variance", "mse", "dead_frac")
    ]
    if res.ce:
        for k in ("ce_clean", "ce_sae", "ce_zero_ablation", "ce_score"):
            rows.append({"metric": k, "train": res.ce["train"][k], "held-out": res.ce["test"][k]})
    parts = [
        text(
            f"{res.settings.get('kind')} SAE, {res.settings.get('n_features')} features on "
            f"{res.settings.get('data')} (hook {res.settings.get('hook')}); explained variance is measured against "
            "the mean of the evaluated rows; CE score = (CE_zero_ablation - CE_sae) / (CE_zero_ablation - CE_clean)."
        ),
        table(rows),
        figure(res.plot()),
        text(
            f"PCA at equal L0 (m = {h['pca_m']}, fitted on training rows, held-out EV): top-m components "
            f"{h['pca_top_ev']:.4f}; top-m coefficients per token {h['pca_topk_ev']:.4f}."
        ),
    ]
    if res.controls:
        parts.append(
            table([{"control": k, **{kk: v.get(kk) for kk in _CONTROL_COLUMNS}} for k, v in res.controls.items()])
        )
    return parts


def browser_html(contexts: dict[int, list[dict]], density: dict[int, float] | None = None) -> Html:
    """HTML for the feature browser (every token string escaped).

    Args:
        contexts: ``{feature: [context rows]}`` from :func:`interplab.analyses.sae.top_contexts`.
        density: firing density of each feature, shown beside its heading.
    """
    parts = ['<div class="ipl-feature-browser">']
    for f, rows in contexts.items():
        dens = f" — density {density[f]:.2e}" if density and f in density else ""
        parts.append(
            f'<h4 class="ipl-heading">feature {int(f)}{escape(dens)}</h4><table class="ipl-table">'
            "<tr><th>activation</th><th>context</th></tr>"
        )
        if not rows:
            parts.append("<tr><td></td><td>(never fires on these tokens)</td></tr>")
        for r in rows:
            ctx = (
                "".join(escape(t) for t in r["before"])
                + f"<mark><b>{escape(r['token'])}</b></mark>"
                + "".join(escape(t) for t in r["after"])
            )
            parts.append(
                f"<tr><td>{r['activation']:.3g}</td>"
                f'<td style="white-space:pre-wrap;font-family:monospace">{ctx}</td></tr>'
            )
        parts.append("</table>")
    parts.append("</div>")
    return Html("".join(parts))


def sae_features_report(
    title: str, examples: dict[int, list[dict]], effects: dict[int, dict[str, list]], density: dict[int, float]
) -> Report:
    """The report of ``interplab sae features``: per feature its max-activating contexts and the tokens its decoder
    direction promotes and suppresses directly."""
    rep = Report(title, f"{len(examples)} features")
    rep.section("Max-activating examples", browser_html(examples, density), id="sae-examples")
    rows = [
        {
            "feature": f,
            "promotes": "  ".join(f"{t!r} {v:+.3g}" for t, v in e["top"]),
            "suppresses": "  ".join(f"{t!r} {v:+.3g}" for t, v in e["bottom"]),
        }
        for f, e in effects.items()
    ]
    rep.section("Direct logit effects of the decoder directions", table(rows), id="sae-logit-effects")
    return rep
