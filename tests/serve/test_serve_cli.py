"""``interplab serve``: loopback by default; another host refused (exit 2, before any model loads) unless
``--allow-remote``, which warns; the app handed to uvicorn serves the model given."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from interplab.cli import app
from interplab.cli.serve import is_loopback

runner = CliRunner()


@pytest.fixture
def fake_uvicorn(monkeypatch):
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    return calls


def said(r) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(r.output.split())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.168.1.5", "::", "example.org"]))


def test_non_loopback_host_is_refused_before_loading_a_model(fake_uvicorn, tmp_path):
    r = runner.invoke(app, ["serve", "--model", "no-such-model", "--host", "0.0.0.0", "--runs", str(tmp_path)])
    assert r.exit_code == 2 and "not a loopback address" in said(r) and "--allow-remote" in said(r)
    assert fake_uvicorn == []


def test_serve_hands_uvicorn_an_app_on_loopback(fake_uvicorn, tiny_tok_dir, tmp_path):
    port = _free_port()
    r = runner.invoke(app, ["serve", "--model", tiny_tok_dir, "--port", str(port), "--runs", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    (call,) = fake_uvicorn
    assert call["host"] == "127.0.0.1" and call["port"] == port
    c = TestClient(call["app"], base_url=f"http://127.0.0.1:{port}")
    assert c.get("/api/model").json()["name"] == call["app"].state.model.name
    assert TestClient(call["app"], base_url="http://evil.example").get("/").status_code == 400
    assert (tmp_path / "runs").is_dir()


def test_allow_remote_warns_and_accepts_any_host(fake_uvicorn, tiny_tok_dir, tmp_path):
    args = ["serve", "--model", tiny_tok_dir, "--host", "0.0.0.0", "--port", str(_free_port()), "--allow-remote"]
    r = runner.invoke(app, [*args, "--runs", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "warning" in said(r) and "without authentication" in said(r)
    (call,) = fake_uvicorn
    assert TestClient(call["app"], base_url="http://192.168.1.5:8000").get("/").status_code == 200


def test_port_in_use_is_a_clear_error(fake_uvicorn, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = runner.invoke(app, ["serve", "--model", "no-such-model", "--port", str(port), "--runs", str(tmp_path)])
    assert r.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in said(r) and "--port" in said(r)
    assert fake_uvicorn == []
