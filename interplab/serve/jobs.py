"""The job queue of ``interplab serve``: analyses run one at a time in a worker thread, and the page polls their
status (queued, running with a stage and a fraction, complete with a run id, failed with a message).

One worker, because the model is one set of weights in one process: two analyses at once would only share the
same cores. A user error (:class:`ValueError` and the like) becomes the job's message as it is; anything else
becomes a one-line message naming the exception, with the traceback in the server's log, never on the page.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from interplab.serve.analyses import Progress, Request

__all__ = ["Job", "JobQueue"]

log = logging.getLogger("interplab.serve")

State = Literal["queued", "running", "complete", "failed"]


def _user_errors() -> tuple[type[BaseException], ...]:
    from interplab.hooks import HookNameError

    return (ValueError, FileNotFoundError, HookNameError)


@dataclass
class Job:
    """One submitted analysis. ``client`` is the submitting browser's tag; ``run_id`` the run directory's name once
    the job has started."""

    request: Request
    client: str
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    state: State = "queued"
    stage: str = "queued"
    done: int = 0
    total: int = 0
    run_id: str | None = None
    error: str | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    def to_json(self, ahead: int = 0) -> dict[str, Any]:
        """What the page polls (``ahead``: jobs queued before this one)."""
        end = self.finished or time.time()
        return {
            "id": self.id,
            "analysis": self.request.analysis,
            "summary": self.request.summary(),
            "state": self.state,
            "stage": self.stage if self.state != "queued" else f"queued ({ahead} ahead)",
            "done": self.done,
            "total": self.total,
            "run_id": self.run_id,
            "error": self.error,
            "seconds": round(end - self.started, 2) if self.started else 0.0,
        }


class JobQueue:
    """Jobs run in submission order by one daemon thread (started with the first job).

    ``execute(job, progress) -> run directory`` does the work; it may set ``job.run_id`` early (so that a failed
    job still points at its failed run directory)."""

    def __init__(self, execute: Callable[[Job, Progress], Path]):
        self._execute = execute
        self._jobs: dict[str, Job] = {}
        self._pending: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, request: Request, client: str) -> Job:
        job = Job(request, client)
        with self._lock:
            self._jobs[job.id] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="interplab-serve-worker", daemon=True)
                self._thread.start()
        self._pending.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def ahead(self, job: Job) -> int:
        """How many queued jobs were submitted before ``job``."""
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.state == "queued" and j.submitted < job.submitted)

    def wait(self, job: Job, timeout: float = 60.0) -> Job:
        """Block until ``job`` has finished (for tests and scripts); a :class:`TimeoutError` after ``timeout`` s."""
        t = time.monotonic()
        while job.state in ("queued", "running"):
            if time.monotonic() - t > timeout:
                raise TimeoutError(f"job {job.id} ({job.request.analysis}) still {job.state} after {timeout} s.")
            time.sleep(0.02)
        return job

    def close(self) -> None:
        """Stop the worker after the job it is running (queued jobs are dropped)."""
        with self._lock:
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._pending.put(None)
            thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            job = self._pending.get()
            if job is None:
                return
            job.state, job.stage, job.started = "running", "starting", time.time()

            def progress(stage: str, done: int, total: int, job: Job = job) -> None:
                job.stage, job.done, job.total = stage, int(done), int(total)

            try:
                run_dir = self._execute(job, progress)
                job.run_id = Path(run_dir).name
                job.state, job.stage, job.done, job.total = "complete", "complete", 1, 1
            except _user_errors() as e:
                job.error, job.state = str(e), "failed"
            except Exception as e:  # a bug: the page gets one line, the log the traceback
                log.exception("job %s (%s) failed", job.id, job.request.analysis)
                job.error = f"internal error ({type(e).__name__}: {e}); the server's log has the details."
                job.state = "failed"
            finally:
                job.finished = time.time()
