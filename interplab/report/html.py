"""A small, self-contained HTML report builder.

>>> r = Report("SmolLM2 on IOI")
>>> r.section("Logit lens", text("Prompt: ..."), figure(result.plot()), table(result.to_frame("last")))
>>> r.save("runs/x/report.html")

The page works offline: plotly.js is embedded inline once per page (from the installed plotly
package, never a CDN) and the attention viewer is a few lines of vanilla JavaScript.

Escaping is the builder's job, not the caller's. Helpers return :class:`Html` (trusted markup);
anything else passed as a part is treated as text and escaped. Every token and user string is
passed through ``html.escape``; data embedded in ``<script>`` is JSON with ``<``, ``>``, ``&``,
U+2028 and U+2029 written as ``\\u003c``-style escapes, so a token such as
``</script><script>alert(1)</script>`` stays text. The viewer puts tokens into the page with
``textContent`` only.

Each section is ``<section class="ipl-section" id="<slug>">`` (the id is given or derived from the
title), so tests and links can find it.
"""

from __future__ import annotations

import datetime as _dt
import html as _html
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Html",
    "Report",
    "attention_viewer",
    "escape",
    "figure",
    "group",
    "heading",
    "json_for_script",
    "raw",
    "table",
    "text",
]

_ids = itertools.count()


def _next_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def escape(s: Any) -> str:
    """``html.escape(str(s))`` (quotes included)."""
    return _html.escape(str(s), quote=True)


def json_for_script(obj: Any, **dumps_kw) -> str:
    """JSON safe to place inside a ``<script>`` element: ``<``, ``>``, ``&``, U+2028, U+2029 are \\u-escaped
    (they can only occur inside JSON strings, where the escape means the same character)."""
    return _script_safe(json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"), **dumps_kw))


def _script_safe(s: str) -> str:
    return (
        s.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


class Html(str):
    """Trusted HTML markup produced by a helper, with the page-level assets it needs (``requires``)."""

    requires: frozenset[str]

    def __new__(cls, markup: str, requires: Iterable[str] = ()):
        obj = super().__new__(cls, markup)
        obj.requires = frozenset(requires)
        return obj


def raw(markup: str) -> Html:
    """Mark a string as trusted HTML (it is inserted unescaped: never pass user or model text)."""
    return Html(markup)


def _as_html(part: Any) -> Html:
    if isinstance(part, Html):
        return part
    if part is None:
        return Html("")
    if hasattr(part, "to_plotly_json"):  # a plotly figure passed directly
        return figure(part)
    if _is_frame(part):
        return table(part)
    return text(str(part))


def group(*parts: Any, cls: str = "ipl-group") -> Html:
    """Several parts in one ``<div>``."""
    hs = [_as_html(p) for p in parts]
    req = frozenset().union(*(h.requires for h in hs)) if hs else frozenset()
    return Html(f'<div class="{escape(cls)}">' + "".join(hs) + "</div>", req)


def text(s: str, cls: str = "ipl-text") -> Html:
    """A paragraph of text (escaped; newlines kept)."""
    return Html(f'<p class="{escape(cls)}">{escape(s)}</p>')


def heading(s: str, level: int = 3) -> Html:
    level = min(max(int(level), 2), 6)
    return Html(f'<h{level} class="ipl-heading">{escape(s)}</h{level}>')


# ---------------------------------------------------------------------------------- figures


def figure(fig, height: int | None = None, config: Mapping[str, Any] | None = None) -> Html:
    """A plotly figure, drawn by the plotly.js embedded once in the page."""
    import plotly.io as pio

    div_id = _next_id("ipl-fig")
    fig_json = pio.to_json(fig, validate=False)  # {"data": [...], "layout": {...}}
    assert fig_json is not None  # None only when writing to a file
    cfg = {"displaylogo": False, "responsive": True, "showLink": False}
    cfg.update(config or {})
    style = f' style="height:{int(height)}px"' if height else ""
    script = (
        f"(function(){{var f={_script_safe(fig_json)};"
        f"Plotly.newPlot({json_for_script(div_id)},f.data,f.layout,{json_for_script(cfg)});}})();"
    )
    return Html(f'<div class="ipl-figure" id="{div_id}"{style}></div><script>{script}</script>', {"plotly"})


# ---------------------------------------------------------------------------------- tables


def _is_frame(x: Any) -> bool:
    return type(x).__name__ == "DataFrame" and hasattr(x, "columns") and hasattr(x, "itertuples")


def _cell(v: Any, float_fmt: str) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return format(v, float_fmt)
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy / torch scalars
        return _cell(v.item(), float_fmt)
    return str(v)


def table(
    data,
    columns: Sequence[str] | None = None,
    float_fmt: str = ".4g",
    max_rows: int | None = None,
    cls: str = "ipl-table",
) -> Html:
    """An HTML table from a pandas DataFrame, a list of dicts or a dict (two columns: key, value).
    Every header and cell is escaped."""
    if _is_frame(data):
        cols = [str(c) for c in data.columns]
        rows = [dict(zip(cols, r)) for r in data.itertuples(index=False, name=None)]
    elif isinstance(data, Mapping):
        cols = ["key", "value"]
        rows = [{"key": k, "value": v} for k, v in data.items()]
    else:
        rows = [dict(r) for r in data]
        cols = []
        for r in rows:
            cols += [str(c) for c in r if str(c) not in cols]
        rows = [{str(k): v for k, v in r.items()} for r in rows]
    if columns is not None:
        cols = list(columns)
    n = len(rows)
    if max_rows is not None and n > max_rows:
        rows = rows[:max_rows]
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_cell(r.get(c), float_fmt))}</td>" for c in cols) + "</tr>" for r in rows
    )
    note = f'<p class="ipl-note">{len(rows)} of {n} rows shown.</p>' if len(rows) < n else ""
    return Html(
        f'<div class="ipl-table-wrap"><table class="{escape(cls)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>{note}</div>"
    )


# ---------------------------------------------------------------------------------- attention viewer


def _to_nested(patterns) -> list:
    if hasattr(patterns, "detach"):  # torch
        patterns = patterns.detach().float().cpu().numpy()
    if hasattr(patterns, "tolist"):
        return patterns.tolist()
    return [_to_nested(p) if hasattr(p, "tolist") or hasattr(p, "detach") else p for p in patterns]


def attention_viewer(
    str_tokens: Sequence[str],
    patterns,
    layer_names: Sequence[str] | None = None,
    head_names: Sequence[str] | None = None,
    title: str | None = None,
    decimals: int = 3,
) -> Html:
    """Interactive attention-pattern viewer: a layer and a head ``<select>``, a query x key grid coloured
    by attention (hover a cell for its value; click a row to pick the query) and the prompt's tokens
    coloured by how much the picked query attends to each.

    ``patterns[layer][head][query][key]``: nested lists, a numpy array or a tensor ``[L, H, Q, K]``.
    Values are rounded to ``decimals`` (stored as integers x 10**decimals to keep the page small)."""
    tokens = [str(t) for t in str_tokens]
    pats = _to_nested(patterns)
    n = len(tokens)
    if not pats or not pats[0]:
        raise ValueError("attention_viewer needs at least one layer and one head of patterns.")
    scale = 10 ** int(decimals)
    enc: list[list[list[list[int]]]] = []
    for li, layer in enumerate(pats):
        enc_l = []
        for hi, head in enumerate(layer):
            if len(head) != n or any(len(row) != n for row in head):
                shape = f"{len(head)} x {len(head[0]) if head else 0}"
                raise ValueError(
                    f"pattern of layer {li}, head {hi} is {shape}, but there are {n} tokens: it must be "
                    f"{n} x {n} (one query row and one key column per token)."
                )
            enc_l.append([[round(float(v) * scale) for v in row] for row in head])
        enc.append(enc_l)
    n_heads = max(len(layer) for layer in enc)
    lnames = [str(x) for x in (layer_names if layer_names is not None else [f"layer {i}" for i in range(len(enc))])]
    hnames = [str(x) for x in (head_names if head_names is not None else [f"head {i}" for i in range(n_heads)])]
    if len(lnames) != len(enc) or len(hnames) != n_heads:
        raise ValueError(
            f"got {len(lnames)} layer names / {len(hnames)} head names for {len(enc)} layers x {n_heads} heads."
        )
    vid = _next_id("ipl-attn")
    data = {"tokens": tokens, "patterns": enc, "scale": scale, "layer_names": lnames, "head_names": hnames}
    lopts = "".join(f'<option value="{i}">{escape(name)}</option>' for i, name in enumerate(lnames))
    hopts = "".join(f'<option value="{i}">{escape(name)}</option>' for i, name in enumerate(hnames))
    cap = f'<h4 class="ipl-attn-title">{escape(title)}</h4>' if title else ""
    return Html(
        f'<div class="ipl-attn" id="{vid}">{cap}'
        f'<div class="ipl-attn-controls"><label>Layer <select class="ipl-attn-layer">{lopts}</select></label> '
        f'<label>Head <select class="ipl-attn-head">{hopts}</select></label> '
        f'<span class="ipl-attn-caption"></span></div>'
        f'<div class="ipl-attn-tokens" title="attention from the selected query to each token"></div>'
        f'<div class="ipl-attn-grid-wrap"><table class="ipl-attn-grid"></table></div>'
        f'<script type="application/json" class="ipl-attn-data">{json_for_script(data)}</script>'
        f"</div>",
        {"attention"},
    )


_ATTENTION_JS = r"""
(function(){
  function show(t){
    return (!t.trim() || /[\u0000-\u001f\u007f-\u00a0\u2028\u2029]/.test(t)) ? JSON.stringify(t) : t;
  }
  function bg(v){ return 'rgba(8,81,156,' + v.toFixed(3) + ')'; }
  function fg(v){ return v > 0.55 ? '#fff' : '#111'; }
  function init(root){
    if (root.getAttribute('data-ready')) return;
    var data = JSON.parse(root.querySelector('script.ipl-attn-data').textContent);
    var ls = root.querySelector('select.ipl-attn-layer'), hs = root.querySelector('select.ipl-attn-head');
    var grid = root.querySelector('table.ipl-attn-grid'), strip = root.querySelector('.ipl-attn-tokens');
    var cap = root.querySelector('.ipl-attn-caption');
    var n = data.tokens.length, q = n - 1;
    function render(){
      var L = +ls.value, H = +hs.value, P = data.patterns[L][H], s = data.scale;
      root.setAttribute('data-layer', L); root.setAttribute('data-head', H); root.setAttribute('data-query', q);
      cap.textContent = data.layer_names[L] + ', ' + data.head_names[H] + ' \u2014 query ' + q + ': '
        + show(data.tokens[q]);
      strip.textContent = '';
      for (var k = 0; k < n; k++){
        var v = P[q][k] / s, sp = document.createElement('span');
        sp.className = 'ipl-tok' + (k === q ? ' ipl-tok-query' : '');
        sp.textContent = show(data.tokens[k]);
        sp.style.background = bg(v); sp.style.color = fg(v);
        sp.title = 'key ' + k + ': ' + v.toFixed(3);
        strip.appendChild(sp);
      }
      grid.textContent = '';
      var head = document.createElement('tr'), corner = document.createElement('th');
      corner.textContent = 'query \\ key'; head.appendChild(corner);
      for (var k2 = 0; k2 < n; k2++){
        var th = document.createElement('th'); th.className = 'ipl-key';
        var d = document.createElement('div'); d.textContent = show(data.tokens[k2]); th.appendChild(d);
        head.appendChild(th);
      }
      grid.appendChild(head);
      for (var i = 0; i < n; i++){
        var tr = document.createElement('tr'), rh = document.createElement('th');
        rh.className = 'ipl-query' + (i === q ? ' ipl-selected' : '');
        rh.textContent = i + ' ' + show(data.tokens[i]);
        rh.setAttribute('data-q', i);
        rh.addEventListener('click', function(){ q = +this.getAttribute('data-q'); render(); });
        tr.appendChild(rh);
        for (var j = 0; j < n; j++){
          var val = P[i][j] / s, td = document.createElement('td');
          td.style.background = bg(val);
          td.title = show(data.tokens[i]) + ' \u2192 ' + show(data.tokens[j]) + ': ' + val.toFixed(3);
          td.setAttribute('data-v', val.toFixed(3));
          tr.appendChild(td);
        }
        grid.appendChild(tr);
      }
    }
    ls.addEventListener('change', render); hs.addEventListener('change', render);
    render();
    root.setAttribute('data-ready', '1');
  }
  function all(){ var els = document.querySelectorAll('.ipl-attn'); for (var i = 0; i < els.length; i++) init(els[i]); }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', all); else all();
})();
"""

_CSS = """
:root{--fg:#1b1f24;--muted:#5b6572;--line:#d8dee4;--accent:#08519c}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);margin:0;background:#fafbfc}
header.ipl-header{background:#fff;border-bottom:1px solid var(--line);padding:18px 32px}
header.ipl-header h1{margin:0 0 4px;font-size:24px}
.ipl-meta{color:var(--muted);font-size:13px;margin:0}
nav.ipl-toc{margin-top:8px;font-size:14px}
nav.ipl-toc a{margin-right:14px;color:var(--accent);text-decoration:none}
main{padding:8px 32px 48px;max-width:1400px}
section.ipl-section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 22px;margin:18px 0}
section.ipl-section>h2{margin:0 0 10px;font-size:20px}
.ipl-heading{margin:18px 0 6px}
.ipl-text{white-space:pre-wrap;margin:6px 0}
.ipl-note{color:var(--muted);font-size:12px}
.ipl-table-wrap{overflow-x:auto;margin:8px 0}
table.ipl-table{border-collapse:collapse;font-size:13px}
table.ipl-table th,table.ipl-table td{border:1px solid var(--line);padding:3px 8px;text-align:left;white-space:pre;
  font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
table.ipl-table th{background:#f3f5f7}
.ipl-figure{width:100%;min-height:300px}
.ipl-attn{margin:10px 0}
.ipl-attn-controls{margin:6px 0}
.ipl-attn-controls select{margin:0 12px 0 4px}
.ipl-attn-caption{color:var(--muted);font-size:13px;white-space:pre}
.ipl-attn-tokens{margin:8px 0;line-height:2}
.ipl-tok{font-family:ui-monospace,monospace;white-space:pre;border:1px solid var(--line);border-radius:3px;
  padding:1px 2px;margin:0 1px}
.ipl-tok-query{outline:2px solid #e6550d}
.ipl-attn-grid-wrap{overflow:auto;max-height:80vh}
table.ipl-attn-grid{border-collapse:collapse;font-family:ui-monospace,monospace;font-size:11px}
table.ipl-attn-grid td{width:20px;height:20px;min-width:20px;border:1px solid #eef1f4;padding:0}
table.ipl-attn-grid th{font-weight:normal;white-space:pre;padding:0 4px}
table.ipl-attn-grid th.ipl-query{text-align:right;cursor:pointer}
table.ipl-attn-grid th.ipl-selected{background:#fdd0a2}
table.ipl-attn-grid th.ipl-key{vertical-align:bottom;height:90px}
table.ipl-attn-grid th.ipl-key div{writing-mode:vertical-rl;transform:rotate(180deg);max-height:88px;overflow:hidden}
"""


def _slug(s: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")
    return slug or "section"


class Report:
    """An HTML page made of sections; ``save(path)`` writes one self-contained file."""

    def __init__(self, title: str, subtitle: str | None = None):
        self.title = title
        self.subtitle = subtitle
        self.sections: list[tuple[str, str, list[Html]]] = []  # (id, title, parts)

    def section(self, title: str, *parts: Any, id: str | None = None) -> Report:
        """Add a section. Parts: helpers' :class:`Html`, plotly figures, DataFrames; anything else is escaped text."""
        sid = _slug(id or title)
        taken = {s[0] for s in self.sections}
        base, i = sid, 2
        while sid in taken:
            sid, i = f"{base}-{i}", i + 1
        self.sections.append((sid, title, [_as_html(p) for p in parts]))
        return self

    @property
    def requires(self) -> frozenset[str]:
        return frozenset().union(*(p.requires for _, _, parts in self.sections for p in parts))

    def to_html(self) -> str:
        from interplab import __version__

        req = self.requires
        assets = ""
        if "plotly" in req:
            from plotly.offline import get_plotlyjs

            assets += f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
        if "attention" in req:
            assets += f"<script>{_ATTENTION_JS}</script>\n"
        when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        toc = "".join(f'<a href="#{escape(sid)}">{escape(t)}</a>' for sid, t, _ in self.sections)
        sub = f'<p class="ipl-meta">{escape(self.subtitle)}</p>' if self.subtitle else ""
        body = "\n".join(
            f'<section class="ipl-section" id="{escape(sid)}"><h2>{escape(t)}</h2>\n'
            + "\n".join(parts)
            + "\n</section>"
            for sid, t, parts in self.sections
        )
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(self.title)}</title>\n<style>{_CSS}</style>\n{assets}</head>\n<body>\n"
            f'<header class="ipl-header"><h1>{escape(self.title)}</h1>{sub}'
            f'<p class="ipl-meta">interplab {escape(__version__)} \u00b7 {escape(when)}</p>'
            f'<nav class="ipl-toc">{toc}</nav></header>\n<main>\n{body}\n</main>\n</body>\n</html>\n'
        )

    def save(self, path: str | Path) -> Path:
        """Write the page (UTF-8); parent directories are created. Returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_html(), encoding="utf-8")
        return p
