"""The job queue of ``interplab serve``: one worker runs jobs in order and publishes their stage and progress; a
user error becomes the job's message as is, a bug a one-line message without a traceback."""

from __future__ import annotations

import threading
from pathlib import Path

from interplab.serve.analyses import Request
from interplab.serve.jobs import JobQueue


def test_running_job_reports_its_stage_and_queued_jobs_their_place(tmp_path):
    go = threading.Event()
    reached = threading.Event()

    def execute(job, progress):
        progress("patching the heads of layers 0–2", 3, 10)
        reached.set()
        assert go.wait(30)
        return tmp_path / f"run-{job.request.prompt}"

    q = JobQueue(execute)
    try:
        first = q.submit(Request("lens", prompt="a"), "client")
        assert reached.wait(30)
        second, third = q.submit(Request("lens", prompt="b"), "client"), q.submit(Request("lens", prompt="c"), "c")
        status = first.to_json(q.ahead(first))
        assert (status["state"], status["stage"], status["done"], status["total"]) == (
            "running",
            "patching the heads of layers 0–2",
            3,
            10,
        )
        assert second.to_json(q.ahead(second))["stage"] == "queued (0 ahead)"
        assert third.to_json(q.ahead(third))["stage"] == "queued (1 ahead)"
        go.set()
        for job, name in ((first, "run-a"), (second, "run-b"), (third, "run-c")):
            done = q.wait(job)
            assert (done.state, done.run_id, done.error) == ("complete", name, None)
    finally:
        go.set()
        q.close()


def test_user_error_is_the_message_and_a_bug_is_one_line_without_traceback():
    def execute(job, progress):
        if job.request.prompt == "user":
            raise ValueError("the prompt is 900 tokens, more than the model's context of 64; shorten it.")
        raise RuntimeError("boom")

    q = JobQueue(execute)
    try:
        user = q.wait(q.submit(Request("lens", prompt="user"), "c"))
        bug = q.wait(q.submit(Request("lens", prompt="bug"), "c"))
    finally:
        q.close()
    assert user.state == "failed" and user.error == (
        "the prompt is 900 tokens, more than the model's context of 64; shorten it."
    )
    assert bug.state == "failed" and bug.error is not None
    assert bug.error.startswith("internal error (RuntimeError: boom)") and "\n" not in bug.error
    assert "Traceback" not in bug.error


def test_worker_survives_a_failed_job(tmp_path):
    calls: list[str] = []

    def execute(job, progress) -> Path:
        calls.append(job.request.prompt)
        if job.request.prompt == "bad":
            raise RuntimeError("x")
        return tmp_path / "ok"

    q = JobQueue(execute)
    try:
        q.wait(q.submit(Request("lens", prompt="bad"), "c"))
        assert q.wait(q.submit(Request("lens", prompt="good"), "c")).state == "complete"
    finally:
        q.close()
    assert calls == ["bad", "good"]
