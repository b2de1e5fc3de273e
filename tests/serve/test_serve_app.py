"""``interplab serve``'s API on the tiny tokenized Llama, through Starlette's TestClient: a job runs in the worker
thread and becomes an ordinary run directory; each browser sees only its own runs unless it asks; bad input is a
4xx JSON message; hostile text stays text."""

from __future__ import annotations

import json
import time

import pytest
import torch
from fastapi.testclient import TestClient
from tiny_tokenized import XSS_TOKEN

from interplab.analyses.causal.patching import PatchingResult, activation_patching
from interplab.analyses.observational.dla import DLAResult
from interplab.analyses.observational.lens import LogitLensResult, logit_lens
from interplab.serve import make_app
from interplab.serve.analyses import Request, check_request, head_patching
from interplab.serve.app import COOKIE, client_tag
from interplab.tasks.user_pairs import one_pair, user_pairs

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = "http://127.0.0.1"
PROMPT = "The Eiffel Tower is located in the city of"
XSS_PROMPT = f"{XSS_TOKEN} When Mary and John went to the store, & John"
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Alice and Bob went to the store, Bob gave a drink to"


@pytest.fixture(scope="module")
def app(report_model, tmp_path_factory):
    app = make_app(report_model, tmp_path_factory.mktemp("runs"))
    yield app
    app.state.jobs.close()


def client(app) -> TestClient:
    c = TestClient(app, base_url=BASE)
    assert c.get("/").status_code == 200  # the page sets the cookie
    return c


def run_job(c: TestClient, body: dict, timeout: float = 120.0) -> dict:
    r = c.post("/api/jobs", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    t = time.monotonic()
    while job["state"] in ("queued", "running"):
        assert time.monotonic() - t < timeout, job
        time.sleep(0.05)
        job = c.get(f"/api/jobs/{job['id']}").json()
    return job


def test_page_is_self_contained_and_sets_a_private_cookie(app):
    c = TestClient(app, base_url=BASE)
    r = c.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    page = r.text
    assert "<form" in page and 'id="prompt"' in page and 'id="runs"' in page
    # no network assets: nothing is loaded from anywhere (no src/href to another origin, no CDN)
    assert "http" not in page and "src=" not in page
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'nonce-" in csp
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    # the same browser keeps its id
    assert "set-cookie" not in c.get("/").headers


def test_lens_job_is_a_run_directory_with_the_library_numbers(app, report_model):
    c = client(app)
    job = run_job(c, {"analysis": "lens", "prompt": PROMPT, "answer": " Paris"})
    assert job["state"] == "complete", job
    run = c.get(f"/api/runs/{job['run_id']}").json()
    assert run["status"] == "complete" and run["mine"] and run["has_report"]
    assert "client" not in run["arguments"] and run["arguments"]["prompt"] == PROMPT

    d = app.state.runs_dir / job["run_id"]
    rec = json.loads((d / "run.json").read_text())
    assert rec["command"] == "serve-lens" and rec["status"] == "complete"
    assert rec["arguments"]["client"] == client_tag(c.cookies[COOKIE]) != c.cookies[COOKIE]
    assert {"report.html", "logit_lens.json"} <= set(rec["artefacts"])
    saved = LogitLensResult.load(d / "logit_lens.json")
    ref = logit_lens(report_model, PROMPT, answer=" Paris")
    assert torch.equal(saved.top_ids, ref.top_ids) and torch.allclose(saved.answer_prob, ref.answer_prob)
    assert rec["headline"]["answer_prob_final"] == pytest.approx(float(ref.answer_prob[-1]))

    page = c.get(f"/runs/{job['run_id']}/report.html")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert 'id="lens"' in page.text and "ipl-table" in page.text
    served = c.get(f"/runs/{job['run_id']}/run.json").json()
    assert "client" not in served["arguments"] and served["status"] == "complete"


def test_each_browser_sees_only_its_runs_unless_it_asks(app):
    a, b = client(app), client(app)
    assert a.cookies[COOKIE] != b.cookies[COOKIE]
    job = run_job(a, {"analysis": "attention", "prompt": PROMPT})
    assert job["state"] == "complete", job
    rid = job["run_id"]
    assert rid in [r["id"] for r in a.get("/api/runs").json()["runs"]]
    assert rid not in [r["id"] for r in b.get("/api/runs").json()["runs"]]
    listed = {r["id"]: r for r in b.get("/api/runs", params={"scope": "all"}).json()["runs"]}
    assert rid in listed and listed[rid]["mine"] is False
    one = b.get(f"/api/runs/{rid}").json()  # asked for by id
    assert one["id"] == rid and one["mine"] is False and "client" not in one["arguments"]
    d = app.state.runs_dir / rid
    assert {"attention.safetensors", "tokens.json", "report.html"} <= {p.name for p in d.iterdir()}


def test_script_in_a_prompt_stays_text(app):
    c = client(app)
    job = run_job(c, {"analysis": "dla", "prompt": XSS_PROMPT})
    assert job["state"] == "complete", job
    assert job["summary"] == XSS_PROMPT  # JSON, shown by the page with textContent
    html = c.get(f"/runs/{job['run_id']}/report.html").text
    assert XSS_TOKEN not in html  # never as markup...
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # ...but escaped, as text
    assert DLAResult.load(app.state.runs_dir / job["run_id"] / "dla.json").prompt == XSS_PROMPT
    page = c.get("/").text
    assert XSS_TOKEN not in page


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"analysis": "lens", "prompt": "   "}, 400, "prompt is empty"),
        ({"analysis": "astrology", "prompt": PROMPT}, 400, "unknown analysis 'astrology'; choose one of lens"),
        (
            {"analysis": "patching", "clean": CLEAN, "corrupt": CORRUPT, "answer": " Mary"},
            400,
            "wrong is empty",
        ),
        ({"analysis": "dla", "prompt": PROMPT, "wrong": " Rome"}, 400, "a wrong answer goes with an answer"),
        ({"prompt": PROMPT}, 422, "analysis: Field required"),
    ],
)
def test_bad_input_is_a_clear_4xx_message(app, body, status, says):
    r = client(app).post("/api/jobs", json=body)
    assert r.status_code == status and says in r.json()["error"], r.text
    assert "Traceback" not in r.text


def test_pair_of_different_token_lengths_is_refused_before_any_job(app, report_model):
    corrupt = "When Alexandra and Bob went to the store yesterday, Bob gave a drink to"
    n_clean, n_corrupt = (report_model.to_tokens(p).shape[1] for p in (CLEAN, corrupt))
    assert n_clean != n_corrupt
    c = client(app)
    before = len(c.get("/api/runs", params={"scope": "all"}).json()["runs"])
    r = c.post("/api/jobs", json={"analysis": "patching", "clean": CLEAN, "corrupt": corrupt, "answer": " Mary",
                                  "wrong": " John"})  # fmt: skip
    assert r.status_code == 400
    assert f"clean has {n_clean} tokens, corrupt {n_corrupt}" in r.json()["error"]
    assert len(c.get("/api/runs", params={"scope": "all"}).json()["runs"]) == before


def test_unknown_run_and_path_escape_are_404_json(app):
    c = client(app)
    assert c.get("/api/runs/nope").status_code == 404 and "no run" in c.get("/api/runs/nope").json()["error"]
    assert c.get("/api/runs/..").status_code == 404
    assert c.get("/api/jobs/zzz").status_code == 404
    assert c.get("/api/runs", params={"scope": "everyone"}).status_code == 400
    job = run_job(c, {"analysis": "lens", "prompt": PROMPT})
    assert c.get(f"/runs/{job['run_id']}/../../etc/passwd").status_code == 404
    assert c.get(f"/runs/{job['run_id']}/%2e%2e/%2e%2e/run.json").status_code == 404


def test_foreign_host_and_cross_site_post_are_refused(app):
    evil = TestClient(app, base_url="http://attacker.example")
    assert evil.get("/").status_code == 400  # DNS rebinding: a foreign Host header
    c = client(app)
    r = c.post("/api/jobs", json={"analysis": "lens", "prompt": PROMPT}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


def test_head_patching_job_matches_one_activation_patching_call(app, report_model):
    c = client(app)
    corrupt = CORRUPT
    job = run_job(c, {"analysis": "patching", "clean": CLEAN, "corrupt": corrupt, "answer": " Mary", "wrong": " John"})
    if job["state"] == "failed":  # the tiny tokenizer may split the names differently: pick a same-length pair
        pytest.fail(job["error"])
    saved = PatchingResult.load(app.state.runs_dir / job["run_id"] / "patching.json")
    pairs = user_pairs(report_model, [one_pair(CLEAN, corrupt, " Mary", " John")], task="your pair")
    ref = activation_patching(report_model, pairs, grid="heads", position=None)
    assert saved.labels == ref.labels and saved.values.shape == (report_model.cfg.n_layers, report_model.cfg.n_heads)
    torch.testing.assert_close(saved.values, ref.values, rtol=1e-5, atol=1e-5, equal_nan=True)
    torch.testing.assert_close(saved.per_prompt, ref.per_prompt, rtol=1e-5, atol=1e-5)


def test_head_patching_reports_progress_per_slice_of_layers(report_model):
    pairs = user_pairs(report_model, [one_pair(CLEAN, CORRUPT, " Mary", " John")], task="your pair")
    seen: list[tuple[str, int, int]] = []
    res = head_patching(report_model, pairs, lambda s, d, t: seen.append((s, d, t)), steps=2)
    n = report_model.cfg.n_layers
    assert [(d, t) for _, d, t in seen] == [(i, min(2, n)) for i in range(min(2, n))]
    assert res.values.shape[0] == n and res.settings["layer_slices"] == min(2, n)


def test_check_request_normalises_empty_answers(report_model):
    req = check_request(report_model, Request("lens", prompt=PROMPT, answer="", wrong=""))
    assert req.answer is None and req.wrong is None


def test_failed_analysis_leaves_a_failed_run_and_a_message(app, monkeypatch):
    from interplab.analyses.observational import lens

    def broken(*a, **k):
        raise ValueError("the lens cannot read this model (planted failure)")

    monkeypatch.setattr(lens, "logit_lens", broken)
    c = client(app)
    job = run_job(c, {"analysis": "lens", "prompt": PROMPT})
    assert job["state"] == "failed" and job["error"] == "the lens cannot read this model (planted failure)"
    run = c.get(f"/api/runs/{job['run_id']}").json()
    assert run["status"] == "failed" and "planted failure" in run["error"] and not run["has_report"]


def test_answers_an_analysis_does_not_use_are_not_recorded(report_model):
    lens = check_request(report_model, Request("lens", prompt=PROMPT, answer=" Paris", wrong=" Rome"))
    assert (lens.answer, lens.wrong) == (" Paris", None) and "wrong" not in lens.arguments()
    att = check_request(report_model, Request("attention", prompt=PROMPT, answer=" Paris", wrong=" Rome"))
    assert (att.answer, att.wrong) == (None, None) and att.arguments() == {"prompt": PROMPT}
