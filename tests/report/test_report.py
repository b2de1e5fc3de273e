"""HTML report: the builder's escaping, the model report's sections and data files, and the page in a
real headless Chromium (sections shown, no JS errors, attention viewer responds, no script injection)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
import torch
from tiny_tokenized import REPORT_SECTIONS, XSS_TOKEN

import interplab
from interplab.analyses.observational.lens import LogitLensResult
from interplab.report import (
    Html,
    Report,
    attention_viewer,
    build_report,
    figure,
    json_for_script,
    table,
    text,
)


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts: list[tuple[dict, str]] = []
        self._in: dict | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._in = dict(attrs)
            self.scripts.append((self._in, ""))

    def handle_data(self, data):
        if self._in is not None:
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None


# ------------------------------------------------------------------------------------ builder


def test_json_for_script_is_inert_and_round_trips():
    tricky = {"t": ["</script><script>alert(1)</script>", "a & b", "<!--", "\u2028\u2029", "é"], "n": [0.5, 1]}
    s = json_for_script(tricky)
    assert not re.search(r"[<>&\u2028\u2029]", s)
    assert json.loads(s) == tricky


def test_helpers_escape_everything():
    assert text("<b>x</b> & y") == '<p class="ipl-text">&lt;b&gt;x&lt;/b&gt; &amp; y</p>'
    t = table([{"<th>": "<td>", "n": 0.123456789}])
    assert "<th>&lt;th&gt;</th>" in t and "<td>&lt;td&gt;</td>" in t and "0.1235" in t
    t2 = table({"key<": "v>"})
    assert "key&lt;" in t2 and "v&gt;" in t2
    import pandas as pd

    t3 = table(pd.DataFrame({"a": [XSS_TOKEN]}))
    assert XSS_TOKEN not in t3 and "&lt;script&gt;" in t3

    page = (
        Report(f"title {XSS_TOKEN}", subtitle=XSS_TOKEN)
        .section(f"S {XSS_TOKEN}", XSS_TOKEN, Html("<em>trusted</em>"), id="one")
        .section("S", "plain", id="one")  # duplicate id -> made unique
        .to_html()
    )
    assert XSS_TOKEN not in page and "<em>trusted</em>" in page  # plain str parts are text, Html is markup
    assert '<section class="ipl-section" id="one">' in page and '<section class="ipl-section" id="one-2">' in page
    assert "Plotly" not in page  # no figure, no plotly.js


def test_figure_embeds_plotly_once_and_offline():
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    f = go.Figure(go.Bar(x=[XSS_TOKEN, "b"], y=[1, 2]))
    page = Report("r").section("a", figure(f)).section("b", figure(f), f).to_html()  # a bare figure works too
    js = get_plotlyjs()
    assert page.count(js[:300]) == 1 and js in page
    assert page.count('class="ipl-figure"') == 3
    rest = page.replace(js, "")  # (plotly.js itself names its CDN as the default for geo topojson)
    assert not re.search(r"<script[^>]*\bsrc=", rest) and "://" not in rest
    assert XSS_TOKEN not in page


def test_attention_viewer_validates_and_rounds():
    toks = ["a", "b", XSS_TOKEN]
    pat = torch.rand(2, 3, 3, 3).softmax(-1)
    v = attention_viewer(toks, pat)
    assert v.count("<option") == 2 + 3 and XSS_TOKEN not in v
    p = _Scripts()
    p.feed(v)
    ((_attrs, body),) = p.scripts
    data = json.loads(body)
    assert data["tokens"] == toks and data["scale"] == 1000
    assert data["patterns"][1][2][0][1] == round(float(pat[1, 2, 0, 1]) * 1000)
    assert attention_viewer(toks, pat.tolist()).count("<option") == 5  # nested lists too
    with pytest.raises(ValueError, match="is 3 x 3, but there are 2 tokens"):
        attention_viewer(toks[:2], pat)
    with pytest.raises(ValueError):
        attention_viewer(toks, pat, layer_names=["only one"])


# ------------------------------------------------------------------------------------ model report


def test_report_sections_and_data(report_dir, report_model):
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    for sid in REPORT_SECTIONS:
        assert f'<section class="ipl-section" id="{sid}">' in html
    assert report_model.name in html and "llama" in html and f"{report_model.n_params:,}" in html
    # lens data saved next to the page, one JSON per prompt, loadable
    files = sorted(p.name for p in report_dir.iterdir())
    assert files == ["lens_prompt2.json", "lens_xss.json", "report.html"]
    res = LogitLensResult.load(report_dir / "lens_xss.json")
    assert XSS_TOKEN in res.str_tokens and len(res.layers) == report_model.cfg.n_layers
    assert (
        LogitLensResult.load(report_dir / "lens_prompt2.json").answer_id
        == report_model.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    )
    # one figure per prompt, one attention viewer with every layer and head
    assert html.count('class="ipl-figure"') == 2 and html.count('class="ipl-attn"') == 1
    viewer = html[html.index('class="ipl-attn"') :]
    assert viewer.count("<option") == report_model.cfg.n_layers + report_model.cfg.n_heads


def test_report_escapes_token_strings(report_dir):
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert XSS_TOKEN not in html and "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # escaped as text
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in html  # escaped inside embedded JSON
    p = _Scripts()
    p.feed(html)
    # exactly our scripts: plotly.js, the viewer's code, one per figure, the viewer's data
    kinds = [a.get("type", "") for a, _ in p.scripts]
    assert len(p.scripts) == 1 + 1 + 2 + 1, kinds
    assert kinds.count("application/json") == 1
    # inside scripts the token only occurs in JSON strings, its brackets \u-escaped
    # (plotly's text is also HTML-escaped first, so that it displays literally: \u0026gt; = "&gt;")
    for attrs, body in p.scripts:
        for m in re.finditer(re.escape("alert(1)"), body):
            assert body[: m.start()].endswith(("\\u003e", "\\u0026gt;")), body[m.start() - 40 : m.end() + 40]


def test_report_analysis_sections(report_model, tmp_path):
    from interplab.report.model_report import EXTRA_SECTIONS
    from interplab.report.runs import SECTION_NEEDS

    analyses = [s for s in EXTRA_SECTIONS if s not in SECTION_NEEDS]  # those show other runs: test_report_runs.py
    path = build_report(report_model, tmp_path, prompts=["a b c"], sections=analyses)
    html = path.read_text(encoding="utf-8")
    for sid in [*REPORT_SECTIONS, *analyses]:
        assert f'<section class="ipl-section" id="{sid}">' in html
    assert (tmp_path / "heads.json").exists()
    assert (tmp_path / "patching_ioi_heads.json").exists() and (tmp_path / "ioi" / "ioi.json").exists()
    assert "cannot be built" not in html
    with pytest.raises(ValueError, match="unknown report section"):
        build_report(report_model, tmp_path, sections=["nope"])


def test_report_default_prompts(report_model, tmp_path):
    path = build_report(report_model, tmp_path, sections=())
    assert path == tmp_path / "report.html"
    assert sorted(p.name for p in tmp_path.glob("lens_*.json")) == [
        "lens_factual.json",
        "lens_induction.json",
        "lens_ioi.json",
    ]
    assert "The Eiffel Tower is located in the city of" in path.read_text(encoding="utf-8")


def test_report_requires_tokenizer(tmp_path):
    from interplab.models.model import from_hf

    toy = from_hf(
        interplab.ToyTransformer(
            interplab.ToyConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=0, d_vocab=11, n_ctx=8)
        ),
        name="toy-no-tok",
    )
    with pytest.raises(ValueError, match="tokenizer"):
        build_report(toy, tmp_path)
    assert not (tmp_path / "report.html").exists()


# ------------------------------------------------------------------------------------ browser


# ------------------------------------------------------------------------------------ integration
