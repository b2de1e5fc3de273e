"""``interplab serve``: a local web page over the library — type a prompt or a clean/corrupt pair, pick an analysis
(logit lens, attention patterns, direct logit attribution, head patching on the pair), follow its progress, see the
result and find it saved as an ordinary run directory.

``app.py`` (the FastAPI app, :func:`make_app`), ``jobs.py`` (the worker thread and job states), ``analyses.py``
(what each analysis runs and saves), ``page.py`` (the page). Bound to 127.0.0.1 by the CLI; no network assets.
"""

from __future__ import annotations

from interplab.serve.app import make_app

__all__ = ["make_app"]
