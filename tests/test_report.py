"""HTML report: the builder's escaping, the model report's sections and data files, and the page in a
real headless Chromium (sections shown, no JS errors, attention viewer responds, no script injection)."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from tiny_tokenized import XSS_TOKEN, make_tiny_tokenized_model, task_text

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

SECTIONS = ["model-card", "logit-lens", "attention", "about"]
XSS_PROMPTS = [
    {"name": "xss", "prompt": f"{XSS_TOKEN} When Mary and John went to the store, & John"},
    ("The Eiffel Tower is located in the city of", " Paris"),
]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def tok_model(tmp_path_factory):
    return interplab.load(
        make_tiny_tokenized_model(
            tmp_path_factory.mktemp("tiny_tokenized_report"), vocab_size=1200, extra_text=task_text()
        )
    )


@pytest.fixture(scope="module")
def report_dir(tok_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    build_report(tok_model, out, prompts=XSS_PROMPTS, sections=())  # core sections only
    return out


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


def test_report_sections_and_data(report_dir, tok_model):
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<section class="ipl-section" id="{sid}">' in html
    assert tok_model.name in html and "llama" in html and f"{tok_model.n_params:,}" in html
    # lens data saved next to the page, one JSON per prompt, loadable
    files = sorted(p.name for p in report_dir.iterdir())
    assert files == ["lens_prompt2.json", "lens_xss.json", "report.html"]
    res = LogitLensResult.load(report_dir / "lens_xss.json")
    assert XSS_TOKEN in res.str_tokens and len(res.layers) == tok_model.cfg.n_layers
    assert (
        LogitLensResult.load(report_dir / "lens_prompt2.json").answer_id
        == tok_model.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    )
    # one figure per prompt, one attention viewer with every layer and head
    assert html.count('class="ipl-figure"') == 2 and html.count('class="ipl-attn"') == 1
    viewer = html[html.index('class="ipl-attn"') :]
    assert viewer.count("<option") == tok_model.cfg.n_layers + tok_model.cfg.n_heads


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


def test_report_analysis_sections(tok_model, tmp_path):
    from interplab.report.model_report import EXTRA_SECTIONS

    path = build_report(tok_model, tmp_path, prompts=["a b c"], sections=list(EXTRA_SECTIONS))
    html = path.read_text(encoding="utf-8")
    for sid in [*SECTIONS, *EXTRA_SECTIONS]:
        assert f'<section class="ipl-section" id="{sid}">' in html
    assert (tmp_path / "heads.json").exists()
    assert (tmp_path / "patching_ioi_heads.json").exists() and (tmp_path / "ioi" / "ioi.json").exists()
    assert "cannot be built" not in html
    with pytest.raises(ValueError, match="unknown report section"):
        build_report(tok_model, tmp_path, sections=["nope"])


def test_report_default_prompts(tok_model, tmp_path):
    path = build_report(tok_model, tmp_path, sections=())
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


def _start_chromium(profile_dir):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"The browser test needs headless Chromium, but {', '.join(missing)} is missing. "
            "Run `make setup` (it installs the Debian packages chromium and chromium-driver).",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={profile_dir}",
    ]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    # before any page script runs: record errors and any alert() attempt
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": """
        window.__iplErrors = []; window.__iplAlerts = 0;
        window.addEventListener('error', function(e){ window.__iplErrors.push(String(e.message)); });
        window.alert = function(){ window.__iplAlerts += 1; };
    """
        },
    )
    return driver


@pytest.mark.browser
def test_report_in_headless_chromium(report_dir, tmp_path):
    d = _start_chromium(tmp_path / "chromium-profile")  # fails (not skips) without Chromium
    try:
        _check_page(d, report_dir / "report.html")
        # negative control: the harness does notice a script that runs (trusted raw markup here)
        control = Report("control").section("c", Html(XSS_TOKEN)).save(tmp_path / "control.html")
        d.get(control.as_uri())
        assert d.execute_script("return window.__iplAlerts") == 1
    finally:
        d.quit()


def _check_page(d, page: Path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d.get(page.as_uri())
    WebDriverWait(d, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    for sid in SECTIONS:
        assert d.find_element(By.ID, sid).is_displayed(), sid
    # plotly.js (inline) drew every figure; nothing was fetched from anywhere but the file itself
    WebDriverWait(d, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".ipl-figure .main-svg")) >= 2)
    urls = d.execute_script("return performance.getEntriesByType('resource').map(function(e){ return e.name; })")
    assert all(u.startswith(("file:", "data:", "blob:")) for u in urls), urls
    ticks = [e.get_attribute("textContent") for e in d.find_elements(By.CSS_SELECTOR, ".ipl-figure .xtick text")]
    assert any(XSS_TOKEN in t for t in ticks), ticks[:20]  # the figure shows the token literally too

    viewer = d.find_element(By.CSS_SELECTOR, ".ipl-attn")
    grid = viewer.find_element(By.CSS_SELECTOR, "table.ipl-attn-grid")
    assert viewer.get_attribute("data-ready") == "1"
    n_tok = len(grid.find_elements(By.CSS_SELECTOR, "tr")) - 1
    assert n_tok > 5 and len(grid.find_elements(By.CSS_SELECTOR, "td")) == n_tok * n_tok

    def state():
        return (grid.get_attribute("innerHTML"), viewer.find_element(By.CSS_SELECTOR, ".ipl-attn-caption").text)

    before = state()
    Select(viewer.find_element(By.CSS_SELECTOR, "select.ipl-attn-head")).select_by_index(1)
    after_head = state()
    assert viewer.get_attribute("data-head") == "1" and after_head[0] != before[0] and after_head[1] != before[1]
    Select(viewer.find_element(By.CSS_SELECTOR, "select.ipl-attn-layer")).select_by_index(1)
    after_layer = state()
    assert viewer.get_attribute("data-layer") == "1" and after_layer[0] != after_head[0]
    # clicking a query row re-colours the token strip for that query
    strip = viewer.find_element(By.CSS_SELECTOR, ".ipl-attn-tokens")
    strip_before = strip.get_attribute("innerHTML")
    grid.find_elements(By.CSS_SELECTOR, "th.ipl-query")[1].click()
    assert viewer.get_attribute("data-query") == "1" and strip.get_attribute("innerHTML") != strip_before

    # the hostile token is shown as text — in the prompt text and in the viewer — and never ran
    body = d.find_element(By.TAG_NAME, "body").text
    assert XSS_TOKEN in body
    assert XSS_TOKEN in strip.text
    assert d.execute_script("return window.__iplAlerts") == 0
    try:
        _ = d.switch_to.alert
        pytest.fail("an alert dialog opened")
    except NoAlertPresentException:
        pass
    assert d.execute_script("return window.__iplErrors") == []
    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == []


# ------------------------------------------------------------------------------------ integration


@pytest.fixture(scope="module")
def smol():
    return interplab.load("smollm2-135m")


@pytest.mark.integration
def test_report_smollm2(smol, tmp_path):
    t = time.perf_counter()
    path = build_report(smol, tmp_path)
    seconds = time.perf_counter() - t
    print(f"build_report(smollm2-135m): {seconds:.1f} s, {path.stat().st_size / 1e6:.1f} MB")
    html = path.read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<section class="ipl-section" id="{sid}">' in html
    viewer = html[html.index('class="ipl-attn"') :]
    assert viewer.count("<option") == 30 + 9
    ioi = LogitLensResult.load(tmp_path / "lens_ioi.json")
    assert ioi.answer == " Mary" and ioi.answer_rank[-1] == 1
    assert LogitLensResult.load(tmp_path / "lens_factual.json").answer_rank[-1] == 1
    assert len(ioi.layers) == 30
