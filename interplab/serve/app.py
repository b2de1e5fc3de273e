"""The web app of ``interplab serve`` (FastAPI on Starlette; run by uvicorn in ``interplab serve``).

Routes::

    GET  /                    the page (interplab.serve.page)
    GET  /api/analyses        the analyses offered and their input (prompt or pair)
    GET  /api/model           the model's name and shape
    POST /api/jobs            {"analysis", "prompt", "answer", "wrong"} or {"analysis": "patching", "clean",
                              "corrupt", "answer", "wrong"} -> 202 and the job; 400 {"error"} for bad input
    GET  /api/jobs/{id}       the job: state, stage, done/total, run_id, error
    GET  /api/runs            this browser's runs (?scope=all: every run directory under the runs directory)
    GET  /api/runs/{id}       one run by its id (its directory's name), whoever started it
    GET  /runs/{id}/{file}    a file of a run directory (report.html, run.json, data)

Each browser gets a random client id in an ``HttpOnly``, ``SameSite=Strict`` cookie; a run records only a hash of
it (``client`` in ``run.json``), and the API never returns it. Requests whose ``Host`` is not an allowed name are
refused (against DNS rebinding, when bound to the loopback interface), and so are POSTs from another origin.
Every error is JSON ``{"error": message}`` with a 4xx status; no traceback reaches the page.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from interplab.serve import analyses as A
from interplab.serve.jobs import Job, JobQueue
from interplab.serve.page import index_html

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = ["COOKIE", "LOOPBACK_HOSTS", "JobIn", "client_tag", "make_app"]

COOKIE = "interplab_client"
LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
"""The ``Host`` names accepted by default (the server is bound to the loopback interface)."""
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_CLIENT = re.compile(r"[A-Za-z0-9_-]{16,64}")
_REPORT_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; frame-ancestors 'self'"
)


class JobIn(BaseModel):
    """The body of ``POST /api/jobs``."""

    analysis: str
    prompt: str = ""
    answer: str | None = None
    wrong: str | None = None
    clean: str = ""
    corrupt: str = ""


def client_tag(client_id: str) -> str:
    """What a run records of the browser that started it: a hash of its client id (the cookie's value)."""
    return hashlib.sha256(client_id.encode()).hexdigest()[:24]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return "bad request: " + "; ".join(parts) + " (send JSON with 'analysis' and the prompt or the pair)."


def _read_run(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def make_app(
    model_or_name: Model | str,
    runs_dir: str | Path = "runs",
    *,
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
) -> FastAPI:
    """The app over one model.

    Args:
        model_or_name: a loaded :class:`~interplab.models.model.Model` (with a tokenizer), or what
            :func:`interplab.load` takes (a registry name, a directory, a .gguf file).
        runs_dir: where run directories are written (created if missing); ``?scope=all`` lists every run
            directory in it.
        allowed_hosts: the ``Host`` names accepted (default the loopback names; None: any, for a server that was
            deliberately opened to the network).

    The analyses run one at a time in a worker thread (:class:`~interplab.serve.jobs.JobQueue`, on
    ``app.state.jobs``), started with the first job and stopped when the app shuts down.
    """
    if isinstance(model_or_name, str):
        import interplab

        model: Model = interplab.load(model_or_name)
    else:
        model = model_or_name
    model.need_tokenizer()  # the page is about text: refuse a model without a tokenizer now
    # Requests are checked in the server's threads while the worker runs the model, and a Rust fast tokenizer may
    # not be used by two threads at once: the checks use their own copy of the tokenizer, one at a time.
    checker = copy.copy(model)
    checker.tokenizer = copy.deepcopy(model.tokenizer)
    check_lock = threading.Lock()
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    runs_root = runs.resolve()

    def execute(job: Job, progress: A.Progress) -> Path:
        def started(run_dir: Path) -> None:
            job.run_id = run_dir.name

        return A.run_analysis(model, job.request, runs, job.client, progress, started=started)

    jobs = JobQueue(execute)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        jobs.close()

    app = FastAPI(title="interplab serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.jobs = jobs
    app.state.model = model
    app.state.runs_dir = runs
    cfg = model.cfg
    model_line = (
        f"{model.name} — {cfg.family}, {cfg.n_layers} layers, {cfg.n_heads} heads, d_model {cfg.d_model}; "
        f"runs are saved under {runs_root}"
    )

    # ------------------------------------------------------------------ middleware and errors
    @app.middleware("http")
    async def client_cookie(request: Request, call_next):
        if request.method == "POST":
            origin = request.headers.get("origin")
            if origin and urlsplit(origin).netloc != request.headers.get("host"):
                return _error(403, "requests from another site are refused.")
        cid = request.cookies.get(COOKIE)
        fresh = cid is None or not _CLIENT.fullmatch(cid)
        if fresh:
            cid = secrets.token_urlsafe(24)
        request.state.client = cid
        response = await call_next(request)
        # a run's files (shown in a sandboxed frame) never set the cookie, so a frame cannot replace it
        if fresh and not request.url.path.startswith("/runs/"):
            response.set_cookie(COOKIE, cid, max_age=400 * 24 * 3600, httponly=True, samesite="strict")
        return response

    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        return _error(422, _validation_message(exc))

    def tag(request: Request) -> str:
        return client_tag(request.state.client)

    def run_dir(run_id: str) -> Path:
        if not _ID.fullmatch(run_id):
            raise HTTPException(404, f"no run {run_id!r}: a run id is the name of a run directory.")
        d = runs / run_id
        if d.resolve().parent != runs_root or not (d / "run.json").is_file():
            raise HTTPException(404, f"no run {run_id!r} under {runs_root}.")
        return d

    def run_summary(d: Path, rec: dict[str, Any], me: str) -> dict[str, Any]:
        args = rec.get("arguments") or {}
        head = rec.get("headline") or {}
        return {
            "id": d.name,
            "command": rec.get("command"),
            "analysis": args.get("analysis"),
            "status": rec.get("status"),
            "started": rec.get("started"),
            "summary": head.get("summary")
            or args.get("prompt")
            or " / ".join(str(args[k]) for k in ("clean", "corrupt") if args.get(k)),
            "mine": args.get("client") == me,
        }

    # ------------------------------------------------------------------ routes
    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
            "frame-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
        )
        return HTMLResponse(
            index_html(model.name, model_line, A.ANALYSES, nonce),
            headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/api/analyses")
    def list_analyses() -> dict[str, Any]:
        return A.ANALYSES

    @app.get("/api/model")
    def model_info() -> dict[str, Any]:
        return {"name": model.name, "cfg": cfg.to_dict(), "runs_dir": str(runs_root)}

    @app.post("/api/jobs", status_code=202)
    def submit(body: JobIn, request: Request):
        req = A.Request(**body.model_dump())
        try:
            with check_lock:
                req = A.check_request(checker, req)
        except ValueError as e:
            return _error(400, str(e))
        job = jobs.submit(req, tag(request))
        return job.to_json(jobs.ahead(job))

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (jobs are kept while the server runs).")
        return job.to_json(jobs.ahead(job))

    @app.get("/api/runs")
    def list_runs(request: Request, scope: str = "mine"):
        if scope not in ("mine", "all"):
            raise HTTPException(400, f"scope must be 'mine' or 'all', not {scope!r}.")
        me = tag(request)
        out = []
        for d in sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True):
            rec = _read_run(d)
            if rec is None:
                continue
            s = run_summary(d, rec, me)
            if scope == "all" or s["mine"]:
                out.append(s)
        return {"scope": scope, "runs": out}

    @app.get("/api/runs/{run_id}")
    def get_run(run_id: str, request: Request):
        d = run_dir(run_id)
        rec = _read_run(d)
        if rec is None:
            raise HTTPException(404, f"run {run_id!r} has no readable run.json.")
        args = {k: v for k, v in (rec.get("arguments") or {}).items() if k != "client"}
        return {
            **run_summary(d, rec, tag(request)),
            "arguments": args,
            "headline": rec.get("headline"),
            "artefacts": rec.get("artefacts"),
            "error": rec.get("error"),
            "wall_seconds": rec.get("wall_seconds"),
            "has_report": (d / "report.html").is_file(),
        }

    @app.get("/runs/{run_id}/{path:path}")
    def run_file(run_id: str, path: str):
        d = run_dir(run_id).resolve()
        f = (d / path).resolve()
        if not f.is_relative_to(d) or not f.is_file() or f.name.endswith(".tmp"):
            raise HTTPException(404, f"run {run_id!r} has no file {path!r}.")
        if f.name == "run.json":  # without the client tag, like the API
            rec = _read_run(d) or {}
            rec["arguments"] = {k: v for k, v in (rec.get("arguments") or {}).items() if k != "client"}
            return JSONResponse(rec)
        headers = {"X-Content-Type-Options": "nosniff"}
        if f.suffix == ".html":
            headers["Content-Security-Policy"] = _REPORT_CSP
        return FileResponse(f, headers=headers)

    return app
