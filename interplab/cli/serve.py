"""``interplab serve``: the local web page of :mod:`interplab.serve` on one model, run by uvicorn.

Bound to 127.0.0.1 by default. Any other address makes the page reachable from other machines, and it has no
authentication (whoever reaches it can run analyses and read every run directory), so a non-loopback ``--host`` is
refused unless ``--allow-remote`` is given, and then a warning is printed.
"""

from __future__ import annotations

import ipaddress
import socket

import typer

from interplab.cli._common import ModelName, err, guard, load_model

__all__ = ["is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (127.0.0.0/8, ::1); names are not resolved."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port} is not a TCP port (1-65535).")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as e:
            raise ValueError(
                f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port (or stop what uses it)."
            ) from None


def serve(
    model: ModelName = "smollm2-135m",
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default loopback only)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    runs: str = typer.Option("runs", "--runs", help="Directory the page's run directories are written to."),
    allow_remote: bool = typer.Option(
        False,
        "--allow-remote",
        help="Allow a --host other than loopback (the page has no authentication: anyone who reaches it can run "
        "analyses and read every run).",
    ),
) -> None:
    """A local web page over the library: type a prompt or a pair, pick an analysis (logit lens, attention
    patterns, DLA, head patching on the pair), follow its progress and find each result saved as a run directory."""
    from interplab.serve.app import LOOPBACK_HOSTS, make_app

    with guard():
        loopback = is_loopback(host)
        if not loopback and not allow_remote:
            raise ValueError(
                f"--host {host} is not a loopback address: the page would be reachable from other machines, and it "
                "has no authentication (anyone who reaches it can run analyses and read every run). Keep the default "
                "127.0.0.1 (use an SSH tunnel to reach it from elsewhere), or add --allow-remote if you mean it."
            )
        _check_port(host, port)
        if not loopback:
            err.print(
                f"[bold yellow]warning:[/] serving on {host}:{port}, reachable from other machines, without "
                "authentication: anyone who reaches it can run analyses and read every run directory.",
                highlight=False,
            )
        m = load_model(model)
        app = make_app(m, runs, allowed_hosts=(*LOOPBACK_HOSTS, host) if loopback else None)
    import uvicorn

    shown = f"[{host}]" if ":" in host else host
    err.print(f"interplab serve: [bold]http://{shown}:{port}/[/] ({m.name}; runs in {runs}; Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
