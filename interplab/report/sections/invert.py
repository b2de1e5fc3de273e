"""Inversion of the residual stream (:mod:`interplab.finetune.invert`, "ML Chinese whispers") as an HTML report:
the answer, curves against the layer and the dimensions kept, the search upper bound (Nikolaou et al. 2025), the
published reference points (vec2text, Rep2Text) and the guesses side by side with the original text.

Every token string is shown escaped twice over: made visible (newlines as ``\\n``, tabs as ``\\t``, spaces as
``␣``) and HTML-escaped by the page builder, so a token such as ``</script>`` stays text."""

from __future__ import annotations

import json
from typing import Any

from interplab.report.html import Html, Report, escape, figure, group, heading, table, text

__all__ = ["guesses_html", "invert_parts", "invert_report", "token_label"]


def token_label(tok: str) -> str:
    """A token string with its invisible characters made visible: JSON escapes (``\\n``, ``\\t``, quotes, control
    characters) and ``␣`` for a space. The result is plain text; the page builder HTML-escapes it."""
    return json.dumps(tok, ensure_ascii=False)[1:-1].replace(" ", "␣")


_OK = "background:#d7f5d7"
_BAD = "background:#f8d7d7"


def _tokens_html(tokens: list[str], ids: list[int], original_ids: list[int] | None) -> str:
    cells = []
    for i, (tok, tid) in enumerate(zip(tokens, ids, strict=True)):
        style = ""
        if original_ids is not None:
            style = f' style="{_OK if i < len(original_ids) and original_ids[i] == tid else _BAD}"'
        cells.append(f'<span class="ipl-tok"{style}>{escape(token_label(tok))}</span>')
    return '<span class="ipl-toks">' + "<span>|</span>".join(cells) + "</span>"


def guesses_html(examples: list[dict], run: str, max_examples: int = 4) -> Html:
    """The held-out inputs of inverter ``run`` with their guesses, token by token (green: the original token at that
    position; red: another), guess 0 the greedy one."""
    rows = []
    for ex in [e for e in examples if e["run"] == run][:max_examples]:
        rows.append(
            f"<tr><th>original</th><td>{_tokens_html(ex['original'], ex['original_ids'], None)}</td></tr>"
            + "".join(
                f"<tr><th>{'greedy' if j == 0 else f'guess {j}'}</th>"
                f"<td>{_tokens_html(g, gid, ex['original_ids'])}</td></tr>"
                for j, (g, gid) in enumerate(zip(ex["guesses"], ex["guess_ids"], strict=True))
            )
            + '<tr><td colspan="2"></td></tr>'
        )
    body = "".join(rows) or '<tr><td colspan="2">no examples</td></tr>'
    return Html(
        '<div class="ipl-table-wrap"><table class="ipl-table ipl-guesses" style="font-family:monospace">'
        f"<tbody>{body}</tbody></table></div>"
    )


def _answer(res: Any) -> str:
    h = res.headline()
    p = res.run(res.primary)
    c, lo, hi = res.config, *h["exact_token_recovery_ci"]
    first = (
        f"From layer {h['layer']} of {res.model} ({p['dims']} dims, every position), a {c['n_layers']}-layer inverter "
        f"(d_model {c['d_model']}, {c['steps']} steps on {c['n_train']} sequences of {res.seq_len} tokens) recovers "
        f"{h['exact_token_recovery']:.1%} of held-out tokens in place with its first guess (95% CI {lo:.1%}–{hi:.1%}), "
        f"token-set F1 {h['token_f1']:.2f}, {h['sequence_exact_match']:.1%} of sequences exactly; best of k={c['k']}: "
        f"{h['best_of_k_token_recovery']:.1%} of tokens."
    )
    parts = [first]
    if res.search is not None:
        s = res.search
        parts.append(
            f"Exact search at layer {s['layer']} recovers {s['exact_match']:.0%} of {s['n_sequences']} sequences "
            f"({s['token_accuracy']:.1%} of tokens) in {s['seconds_per_sequence']:.1f} s per sequence."
        )
    for r in res.curve("prior"):
        parts.append(f"With no states at all (the corpus prior) the inverter gets {r['exact_token_recovery']:.1%}.")
    if res.chance_token_recovery is not None:
        parts.append(f"Chance (uniform random tokens) is {res.chance_token_recovery:.1%}.")
    return " ".join(parts)


_DEFINITIONS = (
    "exact-token recovery: the fraction of held-out positions where the first (greedy) guess has the original token "
    "at that position. sequence exact match: the fraction of held-out sequences whose first guess equals the "
    "original. token F1: the F1 of the guess's and the original's token sets (vec2text's token_set_f1, on the "
    "model's tokens), averaged over sequences. best of k: the best of the k guesses per sequence (guess 0 greedy, "
    "the others sampled). oov_rate: held-out tokens absent from the training sequences (the inverter cannot guess "
    "them). Layer L is the residual stream entering block L (L = n_layers: after the last block)."
)


def _published_rows(res: Any) -> list[dict]:
    from interplab.finetune.invert import PUBLISHED

    p = res.run(res.primary)
    last = res.curve("last")
    v, r = PUBLISHED["vec2text"], PUBLISHED["rep2text"]
    return [
        {
            "reference": v["paper"],
            "their setting": v["setting"],
            "their number": f"sequence exact match {v['sequence_exact_match']:.0%}",
            "ours": f"sequence exact match {p['sequence_exact_match']:.1%} (all positions, layer {p['layer']}, "
            f"{res.seq_len} tokens, one pass, no correction)",
        },
        {
            "reference": r["paper"],
            "their setting": r["setting"],
            "their number": f"about {r['token_recovery']:.0%} of tokens",
            "ours": (
                f"{last[0]['exact_token_recovery']:.1%} of tokens in place, token F1 {last[0]['token_f1']:.2f} "
                f"(last position only, layer {last[0]['layer']})"
                if last
                else "not run (add --last-position)"
            ),
        },
    ]


def _sections(res: Any) -> list[tuple[str, list[Html], str | None]]:
    """(title, parts, section id) of an inversion result, in the page's order."""
    h = res.headline()
    out: list[tuple[str, list[Html], str | None]] = [
        (
            "Answer",
            [
                text(_answer(res)),
                table(
                    [
                        {"quantity": k, "value": json.dumps(v) if isinstance(v, list | dict) else v}
                        for k, v in h.items()
                        if not k.startswith("curve_") and k not in ("last", "prior")
                    ]
                ),
                text(_DEFINITIONS),
            ],
            None,
        )
    ]
    if len(res.curve("layer")) > 1:
        out.append(("Recovery vs layer", [figure(res.plot())], None))
    if len(res.curve("dims")) > 1:
        out.append(("Recovery vs dimensions kept", [figure(res.plot_dims())], None))
    out.append(("Every inverter", [table(res.to_frame())], None))
    out.append(
        (
            "Published reference points",
            [
                table(_published_rows(res)),
                text(
                    "Different models, inputs and inverters: read these as orders of magnitude, not as like-for-like "
                    "scores."
                ),
            ],
            None,
        )
    )
    if res.search is not None:
        s = res.search
        rows = [
            {
                "sequence": i,
                "exact": q["exact"],
                "tokens right": sum(a == b for a, b in zip(q["recovered"], q["original"], strict=True)),
                "seconds": q["seconds"],
                "candidates checked (max per position)": max(q["checked"]),
            }
            for i, q in enumerate(s["sequences"])
        ]
        summary = {k: v for k, v in s.items() if k != "sequences"}
        out.append(("Upper bound: exact inversion by search", [table(summary), table(rows)], None))
    guesses = []
    for r in res.runs:
        guesses += [
            text(f"{r['name']} — layer {r['layer']}, dims {r['dims']}, positions {r['positions']}"),
            guesses_html(res.examples, r["name"]),
        ]
    out.append(("Guesses side by side with the original", [group(*guesses)], "guesses"))
    out.append(("Training curves", [figure(res.plot_training())], None))
    return out


def invert_parts(res: Any) -> list[Html]:
    """The parts of an :class:`~interplab.finetune.invert.InversionResult` for one report section (the model
    report's ``invert`` section): the same answer, curves, search upper bound, references and guesses as
    :func:`invert_report`, under subheadings."""
    parts = [text(f"Inverters reading {res.model}'s residual stream ({res.seq_len}-token sequences).")]
    for title, ps, _ in _sections(res):
        parts += [heading(title, 4), *ps]
    return parts


def invert_report(res: Any) -> Report:
    """The report of an :class:`~interplab.finetune.invert.InversionResult`."""
    rep = Report(
        f"ML Chinese whispers: reading the text back from {res.model}'s residual stream",
        "learned inverters (vec2text, Rep2Text) and exact search (SipIt, Nikolaou et al. 2025)",
    )
    for title, ps, sid in _sections(res):
        rep.section(title, *ps, id=sid)
    return rep
