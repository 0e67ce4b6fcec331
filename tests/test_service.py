"""The grading service through real processes: `vitgrade serve` with the local dispatcher on
SQLite and on PostgreSQL, a stub grade that sleeps (tests/stub_grade.py), httpx as the client."""

from __future__ import annotations

import io
import json
import signal
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import sessionmaker

from vitgrade.service import celery_app, jobs
from vitgrade.service import db as database
from vitgrade.service.auth import Caller
from vitgrade.service.core import Service
from vitgrade.service.db import Assignment, Job, Result, Submission, UtcDateTime, connect, migrate, sessions
from vitgrade.service.dispatch import CeleryDispatch
from vitgrade.service.settings import ServiceSettings
from vitgrade.service.webhooks import HEADER, verify

from .servers import STUB, Server, fresh_database, postgres, serving, wait_for

CORRECT = Path(__file__).parent / "corpus" / "correct" / "einops_rearrange.py"
STUDENT_SEES_BEFORE_DUE = ["a visible test"]


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    with postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the server's folder) or a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else fresh_database(request.getfixturevalue("pg_server"))


def stub_server(folder: Path, db: str | None = None, *args: str, **env: str) -> Server:
    """A server grading with the stub, its grades logged to FOLDER/stub.log."""
    env = {"VITGRADE_STUB_SLEEP": "0.3", "VITGRADE_STUB_LOG": str(folder / "stub.log"), **env}
    return Server(folder / "data", db=db, args=("--grader", STUB, "--lease", "3", *args), env=env)


def submit(client: httpx.Client, path: Path = CORRECT, **fields: str) -> httpx.Response:
    with path.open("rb") as fh:
        return client.post("/api/v1/submissions", files={"file": (path.name, fh)}, data=fields)


def finished(client: httpx.Client, submission: str, timeout: float = 60) -> dict:
    def done() -> dict | None:
        view = client.get(f"/api/v1/submissions/{submission}").json()
        return view if view["state"] in {"done", "failed"} else None

    return wait_for(done, timeout, what=f"submission {submission} to be graded")  # type: ignore[return-value]


def starts(folder: Path, event: str = "start") -> list[str]:
    """The submissions (sha256) whose stub grade logged EVENT (start or done), once per grade."""
    log = folder / "stub.log"
    return [line.split()[1] for line in log.read_text().splitlines() if line.startswith(event)] if log.exists() else []


def test_a_student_submits_polls_and_sees_what_their_level_allows(tmp_path: Path, db: str | None) -> None:
    server = stub_server(tmp_path, db).start()
    try:
        student, instructor = server.client(server.token("student", "ab1234")), server.client(server.token("instructor", "prof"))
        accepted = submit(student)
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        assert body["state"] == "queued" and body["position"] == 0 and body["student"] == "ab1234"
        assert body["quota"]["remaining"] == body["quota"]["limit"] - 1
        view = finished(student, body["id"])
        assert view["state"] == "done" and view["attempts"] == 1
        assert [t["name"] for t in view["report"]["tests"]] == STUDENT_SEES_BEFORE_DUE
        assert view["report"]["withheld"] == 3 and view["report"]["score"] == 1.0  # no total gives hidden results away
        assert "seed" not in view["report"] and view["report"]["student_output"]["text"] == ""  # nor the seed, nor prints
        staff = instructor.get(f"/api/v1/submissions/{body['id']}").json()
        assert len(staff["report"]["tests"]) == 4 and staff["report"]["score"] == 10.0 and "seed" in staff["report"]
        assert [s["id"] for s in instructor.get("/api/v1/submissions", params={"student": "ab1234", "state": "done"}).json()] == [body["id"]]
        assert instructor.get("/api/v1/submissions", params={"state": "failed"}).json() == []
        assert server.client().get("/healthz").json()["ok"] is True
        metrics = server.client().get("/metrics").text
        assert 'vitgrade_jobs{queue="interactive",state="done"} 1.0' in metrics
        assert 'vitgrade_http_requests_total{method="POST",route="/api/v1/submissions",status="202"}' in metrics
        assert "/api/v1/submissions/{submission_id}" in server.client().get("/openapi.json").json()["paths"]
    finally:
        server.stop(signal.SIGKILL)


def test_a_real_grade_through_the_service_scores_what_vitgrade_grade_scores(tmp_path: Path) -> None:
    """No stub: the dispatcher grades in its sandbox, from a DATA folder closed to other users."""
    with serving(tmp_path / "data", args=("--suite", "public")) as server:
        assert (server.data.stat().st_mode & 0o077) == 0
        student = server.client(server.token("student", "ab1234"))
        view = finished(student, submit(student).json()["id"], timeout=240)
        report = view["report"]
        assert view["state"] == "done" and report["status"] == "ok", view
        assert report["score"] == report["max_score"] == 18.0, [t["output"] for t in report["tests"] if t["status"] != "passed"]


def test_hidden_results_appear_after_the_due_date_and_publication_without_a_regrade(tmp_path: Path) -> None:
    with serving(tmp_path / "data", args=("--grader", STUB), env={"VITGRADE_STUB_SLEEP": "0.1"}) as server:
        student, instructor = server.client(server.token("student", "ab1234")), server.client(server.token("instructor", "prof"))
        submission = submit(student).json()["id"]
        finished(student, submission)
        report = lambda: student.get(f"/api/v1/submissions/{submission}").json()["report"]  # noqa: E731
        names = lambda: [t["name"] for t in report()["tests"]]  # noqa: E731
        assert names() == STUDENT_SEES_BEFORE_DUE
        assert list(report()["figures"]) == ["attention"]  # the training curve's test is shown after the due date
        due = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert instructor.put("/api/v1/assignments/hw4", json={"due": due}).status_code == 200
        assert names() == STUDENT_SEES_BEFORE_DUE  # not yet due
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        instructor.put("/api/v1/assignments/hw4", json={"due": past})
        assert names() == ["a visible test", "a after_due_date test"]
        assert sorted(report()["figures"]) == ["attention", "training"]
        instructor.put("/api/v1/assignments/hw4", json={"published": True})
        assert names() == ["a visible test", "a after_due_date test", "a after_published test"]  # hidden: never
        assert student.get(f"/api/v1/submissions/{submission}").json()["attempts"] == 1  # the same grade, read again


def answer_before_the_body(server: Server, path: str, length: int, **headers: str) -> bytes:
    """The head of what comes back to a multipart POST to PATH whose body is said to be LENGTH
    bytes, of which only the first 1 KiB is sent; a timeout if the server waits for the rest."""
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.py"\r\n\r\n'
    fields = {"host": f"127.0.0.1:{server.port}", "content-type": "multipart/form-data; boundary=b", "content-length": str(length), **headers}
    request = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request.encode() + head + b"#" * 1024)
        return sock.recv(65536).split(b"\r\n\r\n", 1)[0]


def test_concurrent_uploads_never_pass_the_daily_quota(tmp_path: Path, db: str | None) -> None:
    """Twelve uploads at once by one student with a quota of 3: the count and the insert are one
    transaction each, taken one at a time, so exactly 3 pass."""
    with serving(tmp_path / "data", db=db, args=("--grader", STUB, "--daily-quota", "3"), env={"VITGRADE_STUB_SLEEP": "0.1"}) as server:
        token = server.token("student", "ab1234")
        together = threading.Barrier(12)

        def upload(_: int) -> int:
            with server.client(token) as client:
                together.wait()
                return submit(client).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = sorted(pool.map(upload, range(12)))
        assert codes == [202] * 3 + [429] * 9
        assert server.client(token).get("/api/v1/quota").json()["used"] == 3


def test_refusals_say_why_and_never_show_the_data(tmp_path: Path) -> None:
    args = ("--grader", STUB, "--max-upload-mb", "1", "--daily-quota", "2")
    with serving(tmp_path / "data", args=args, env={"VITGRADE_STUB_SLEEP": "0.1"}) as server:
        alice, bob = server.client(server.token("student", "alice")), server.client(server.token("student", "bob"))
        ta = server.client(server.token("ta", "tina"))
        mine = submit(alice).json()["id"]
        nobody = server.client().get(f"/api/v1/submissions/{mine}")
        assert nobody.status_code == 401 and nobody.headers["www-authenticate"] == "Bearer"
        assert server.client("vg_not-a-token").get(f"/api/v1/submissions/{mine}").status_code == 401
        theirs = bob.get(f"/api/v1/submissions/{mine}")
        assert theirs.status_code == 404 and "alice" not in theirs.text  # someone else's looks like none
        assert bob.get("/api/v1/submissions", params={"student": "alice"}).status_code == 403
        assert bob.get("/api/v1/assignments/hw4/stats").status_code == 403
        assert bob.post(f"/api/v1/submissions/{mine}/regrade").status_code == 403
        assert submit(bob, student="alice").status_code == 403
        assert submit(ta, student="alice").status_code == 403
        assert ta.get(f"/api/v1/submissions/{mine}").status_code == 200
        cookie = {"vitgrade_token": server.token("student", "carol")}
        with CORRECT.open("rb") as fh:
            forged = httpx.post(f"{server.url}/api/v1/submissions", cookies=cookie, files={"file": (CORRECT.name, fh)})
        assert forged.status_code == 403  # a cookie alone, from another site, changes nothing
        with CORRECT.open("rb") as fh:
            own = httpx.post(f"{server.url}/api/v1/submissions", cookies=cookie, files={"file": (CORRECT.name, fh)},
                             headers={"origin": server.url})  # fmt: skip
        assert own.status_code == 202  # from the site's own page
        assert server.client().post("/login", data={"token": "x"}, headers={"sec-fetch-site": "cross-site"}).status_code == 403
        long_name = alice.post("/api/v1/submissions", files={"file": ("x" * 250 + ".py", b"x = 1\n")})
        assert long_name.status_code == 422 and "file name" in long_name.json()["detail"]
        instructor = server.client(server.token("instructor", "prof"))
        for bad in ({"daily_quota": None}, {"suite": "ful"}, {"due": "2026-12-10T23:59:00"}, {"contract": "mine"},
                    {"webhook_url": "http://[::1/", "webhook_secret": "s" * 16}, {"webhook_url": "http://127.0.0.1:9/h"}):
            refused = instructor.put("/api/v1/assignments/hw4", json=bad)
            assert refused.status_code == 422, (bad, refused.text)
        assert instructor.put("/api/v1/assignments/not a name", json={}).status_code == 422
        assert instructor.put("/api/v1/assignments/hw5", json={"suite": "public", "due": "2026-12-10T23:59:00-05:00"}).status_code == 200

        for headers in ({}, {"authorization": "Bearer vg_not-a-token"}):  # answered before the body (most of a MiB) is sent
            refused = answer_before_the_body(server, "/api/v1/submissions", 1000_000, **headers)
            assert refused.startswith(b"HTTP/1.1 401 ") and b"www-authenticate: Bearer" in refused
        whole = server.client("vg_not-a-token").post("/api/v1/submissions", files={"file": ("big.py", b"#" * 1000_000)})
        assert whole.status_code == 401  # a client that sends the whole body anyway still reads the answer
        for headers in ({"accept": "text/html"}, {"accept": "text/html", "cookie": "vitgrade_token=vg_not-a-token", "origin": server.url}):
            to_login = answer_before_the_body(server, "/submit", 1000_000, **headers)  # the page's way: to /login
            assert to_login.startswith(b"HTTP/1.1 303 ") and b"location: /login" in to_login

        big = alice.post("/api/v1/submissions", files={"file": ("big.py", b"#" * (2 << 20))})
        assert big.status_code == 413 and "larger than" in big.json()["detail"]
        page = alice.post("/api/v1/submissions", files={"file": ("big.py", b"#" * (2 << 20))}, headers={"accept": "text/html"})
        assert page.status_code == 413 and page.headers["content-type"].startswith("text/html")  # a page's form gets a page
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.py"\r\n\r\n'
        streamed = alice.post("/api/v1/submissions", content=iter([head, *(b"#" * 65536 for _ in range(40))]),
                              headers={"content-type": "multipart/form-data; boundary=b"})  # fmt: skip
        assert streamed.status_code == 413  # no Content-Length: counted as it arrives
        broken = alice.post("/api/v1/submissions", content=b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nno end",
                            headers={"content-type": "multipart/form-data; boundary=b"})  # fmt: skip
        assert broken.status_code in {400, 422}
        text = alice.post("/api/v1/submissions", files={"file": ("notes.txt", b"hello")})
        assert text.status_code == 422 and ".ipynb, .py or .zip" in text.json()["detail"]
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            for i in range(10_000):
                zf.writestr(f"f{i}.txt", "")
        started = time.monotonic()
        many = alice.post("/api/v1/submissions", files={"file": ("hw4.zip", archive.getvalue())})
        assert many.status_code == 422 and "10000 entries" in many.json()["detail"]
        assert time.monotonic() - started < 10

        second = submit(alice)
        assert second.status_code == 202 and second.json()["quota"]["remaining"] == 0  # refusals above did not count
        third = submit(alice)
        assert third.status_code == 429 and 0 < int(third.headers["retry-after"]) <= 86400 + 1
        assert "2 submissions" in third.json()["detail"]
        assert alice.get("/api/v1/quota").json()["remaining"] == 0
        assert server.client().get("/healthz").status_code == 200  # still serving after all that


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver that fails its first delivery with 500."""

    received: list[tuple[bytes, str]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append((body, self.headers.get(HEADER, "")))
        self.send_response(500 if len(type(self).received) == 1 else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhooks_are_signed_and_retried_until_delivered(tmp_path: Path) -> None:
    receiver = HTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.received = []
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        with serving(tmp_path / "data", args=("--grader", STUB), env={"VITGRADE_STUB_SLEEP": "0.1"}) as server:
            instructor = server.client(server.token("instructor", "prof"))
            hook = {"webhook_url": f"http://127.0.0.1:{receiver.server_port}/hook", "webhook_secret": "s3cret-of-16-chars"}
            assert instructor.put("/api/v1/assignments/hw4", json=hook).status_code == 200
            submission = submit(server.client(server.token("lms", "canvas")), student="ab1234").json()["id"]
            wait_for(lambda: len(Receiver.received) >= 2, 30, what="the webhook's retry")
            for body, signature in Receiver.received:
                assert verify("s3cret-of-16-chars", body, signature)
                assert not verify("wrong", body, signature)
                assert not verify("s3cret-of-16-chars", body + b" ", signature)
            payload = json.loads(Receiver.received[-1][0])
            assert payload["submission"] == submission and payload["student"] == "ab1234" and payload["score"] == 10.0
            time.sleep(2.5)
            assert len(Receiver.received) == 2  # delivered: not sent again
    finally:
        receiver.shutdown()


def test_regrade_all_runs_behind_students_and_the_gradebook_exports(tmp_path: Path) -> None:
    args = ("--grader", STUB, "--pool", "1")
    with serving(tmp_path / "data", args=args, env={"VITGRADE_STUB_SLEEP": "0.4"}) as server:
        lms, instructor = server.client(server.token("lms", "canvas")), server.client(server.token("instructor", "prof"))
        first = [submit(lms, student=f"s{i}").json()["id"] for i in range(4)]
        for submission in first:
            finished(instructor, submission)
        regrade = instructor.post("/api/v1/assignments/hw4/regrade").json()
        assert regrade["total"] == 4
        late = submit(lms, student="late").json()
        assert late["position"] == 0  # ahead of the regrade's queued jobs
        again = submit(lms, student="s0").json()
        assert again["state"] == "queued"
        pending = instructor.get("/api/v1/assignments/hw4/export/grades.csv").text
        assert "\ns0," in pending  # s0's new submission is not graded yet: the gradebook keeps their graded one
        finished(instructor, late["id"])
        progress = instructor.get(f"/api/v1/regrades/{regrade['regrade']}").json()
        assert not progress["finished"]  # the student was graded while the regrade was still going
        wait_for(lambda: instructor.get(f"/api/v1/regrades/{regrade['regrade']}").json()["finished"], 60, what="the regrade")
        scores = instructor.get("/api/v1/assignments/hw4/export/scores.csv")
        assert scores.status_code == 200 and scores.text.splitlines()[0].startswith("student,score,max_score")
        assert len(scores.text.splitlines()) == 1 + 5  # s0's two submissions: one row
        canvas = instructor.get("/api/v1/assignments/hw4/export/canvas.csv").text.splitlines()
        assert canvas[0].startswith("Student,ID,SIS User ID") and canvas[1].startswith("Points Possible")
        stats = instructor.get("/api/v1/assignments/hw4/stats").json()
        assert stats["submissions"] == 5 and sum(stats["histogram"]["counts"]) == 5


def test_a_grading_process_killed_mid_grade_is_graded_exactly_once_more(tmp_path: Path) -> None:
    server = stub_server(tmp_path, None, "--pool", "1", VITGRADE_STUB_SLEEP="3").start()
    database = sessions(connect(f"sqlite:///{server.data / 'vitgrade.db'}"))
    try:
        student = server.client(server.token("student", "ab1234"))
        submission = submit(student).json()["id"]

        def grader_pid() -> int | None:
            with database() as session:
                return session.scalar(select(Job.grader_pid).where(Job.submission_id == submission, Job.state == "running"))

        pid = wait_for(grader_pid, 30, every=0.05, what="the grading process")
        wait_for(lambda: starts(tmp_path), 10, every=0.05, what="the grade to start")
        import os

        os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
        view = finished(student, submission)
        assert view["state"] == "done" and view["attempts"] == 2
        assert len(starts(tmp_path)) == 2
        with database() as session:
            assert len(session.scalars(select(Result).where(Result.submission_id == submission)).all()) == 1
    finally:
        server.stop(signal.SIGKILL)


def test_a_job_whose_grader_always_dies_ends_as_an_infrastructure_failure(tmp_path: Path) -> None:
    with serving(tmp_path / "data", args=("--grader", STUB), env={"VITGRADE_STUB_DIE": "1"}) as server:
        student, instructor = server.client(server.token("student", "ab1234")), server.client(server.token("instructor", "prof"))
        submission = submit(student).json()["id"]
        view = finished(student, submission)
        assert view["state"] == "failed" and view["attempts"] == 3 and view["report"] is None
        assert "infrastructure failure after 3 attempt(s)" in view["error"]
        assert [s["id"] for s in instructor.get("/api/v1/submissions", params={"state": "failed"}).json()] == [submission]


def test_every_queued_job_is_graded_once_across_a_server_killed_mid_queue(tmp_path: Path, db: str | None) -> None:
    server = stub_server(tmp_path, db, "--pool", "1", VITGRADE_STUB_SLEEP="1")
    server.start()
    token = server.token("lms", "canvas")
    ids = [submit(server.client(token), student=f"s{i}").json()["id"] for i in range(5)]
    wait_for(lambda: len(starts(tmp_path)) >= 2, 30, every=0.05, what="two grades to start")
    server.stop(signal.SIGKILL)  # the API, the dispatcher and the grade in progress, at once
    server.start()
    try:
        client = server.client(token)
        views = [finished(client, submission, timeout=90) for submission in ids]
        assert all(v["state"] == "done" for v in views)
        url = db or f"sqlite:///{server.data / 'vitgrade.db'}"
        with sessions(connect(url))() as session:
            per_submission = [len(session.scalars(select(Result).where(Result.submission_id == i)).all()) for i in ids]
        assert per_submission == [1] * 5
        assert len(starts(tmp_path)) <= 6  # at most the one killed grade ran twice
        assert len(starts(tmp_path, "done")) == 5  # and the killed one stopped with its dispatcher: none ran on, orphaned
    finally:
        server.stop(signal.SIGKILL)


def queued(url: str, count: int = 1) -> tuple[sessionmaker, list[Job]]:
    """The schema at URL with COUNT submissions to hw4, each with its job queued; the sessions and the jobs."""
    migrate(url)
    make = sessions(connect(url))
    with make() as session:
        session.add(Assignment(name="hw4", suite="public", daily_quota=5, published=False))
        rows = [Submission(id=f"s{i}", assignment="hw4", student=f"st{i}", filename="a.py", sha256="0" * 64, size=1, seed=1)
                for i in range(count)]  # fmt: skip
        session.add_all(rows)
        session.flush()
        made = [jobs.enqueue(session, row, "interactive") for row in rows]
        session.commit()
    return make, made


def test_a_presumed_dead_attempt_cannot_overwrite_a_later_one(tmp_path: Path) -> None:
    make, _ = queued(f"sqlite:///{tmp_path / 'q.db'}")
    with make() as session:
        first = jobs.claim(session, "host:1", lease_s=0.01)
        assert first is not None and first.attempt == 1
        assert jobs.claim(session, "host:2", lease_s=30) is None  # running: nobody else takes it
        time.sleep(0.05)
        assert [j.id for j in jobs.reap(session, max_attempts=3)] == [first.id]
        second = jobs.claim(session, "host:2", lease_s=30)
        assert second is not None and second.attempt == 2
        report = {"status": "ok", "score": 1.0, "max_score": 1.0}
        assert not jobs.finish(session, first.id, 1, report, "{}", None)  # the old attempt's result is refused
        assert not jobs.renew(session, first.id, 1, 30)
        assert jobs.finish(session, first.id, 2, report, "{}", None)
        assert not jobs.finish(session, first.id, 2, report, "{}", None)  # and a result is written once
        assert len(session.scalars(select(Result)).all()) == 1


def test_a_host_clock_an_hour_ahead_does_not_expire_a_live_lease(pg_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lease set by one host and read by another (the reaper, a Celery task) is timed by the
    database's clock: a host whose own clock runs an hour ahead sees it live, and renews it by the
    database's clock too."""
    make, _ = queued(fresh_database(pg_server))
    settings = ServiceSettings(data=Path("unused"), lease_s=30.0)
    with make() as session:
        job = jobs.claim(session, "host:1", lease_s=30)
        assert job is not None
    ahead = lambda: datetime.now(UTC) + timedelta(hours=1)  # noqa: E731
    for module in (database, jobs, celery_app):  # this host's clock, wherever a service module reads it
        monkeypatch.setattr(module, "now", ahead, raising=False)
    with make() as session:
        assert jobs.reap(session, max_attempts=3) == []
        assert celery_app.take(session, job.id, settings, "host:2") is None  # running under a live lease: not taken
        assert jobs.renew(session, job.id, 1, 30)
        expires = session.scalar(select(Job.lease_expires).where(Job.id == job.id))
        assert expires is not None and expires < datetime.now(UTC) + timedelta(seconds=31)


def test_the_eta_counts_the_graders_the_database_sees_not_this_hosts_pool(tmp_path: Path) -> None:
    """Under Celery the graders are on other hosts: the jobs running (4, where this host's pool
    is 1) say how many grade at once, the recent results how long a grade takes."""
    make, made = queued(f"sqlite:///{tmp_path / 'q.db'}", 12)
    with make() as session:
        for _ in range(2):
            job = jobs.claim(session, "host:1", lease_s=30)
            assert job is not None and jobs.finish(session, job.id, 1, {"status": "ok", "score": 1.0, "max_score": 1.0,
                                                                         "duration_s": 10.0}, "{}", None)  # fmt: skip
        for _ in range(4):
            assert jobs.claim(session, "host:2", lease_s=30) is not None
    service = Service(ServiceSettings(data=tmp_path, pool=1), make, dispatch=None)  # type: ignore[arg-type]
    last = service.get(Caller("prof", "instructor"), made[-1].submission_id)
    assert last["state"] == "queued" and last["position"] == 5
    assert last["eta_s"] == (5 // 4 + 1) * 10.0


def test_the_sweep_resends_what_was_queued_a_lease_ago_counting_from_its_last_queueing(tmp_path: Path) -> None:
    """A job queued again (released after its grader died) is as new to the sweep as one just
    submitted, however long ago it was first queued or last claimed."""
    make, (old, requeued, new) = queued(f"sqlite:///{tmp_path / 'q.db'}", 3)
    long_ago = datetime.now(UTC) - timedelta(seconds=100)
    with make() as session:
        session.execute(update(Job).where(Job.id == old.id).values(queued_at=long_ago))
        session.execute(update(Job).where(Job.id == requeued.id).values(queued_at=long_ago, created_at=long_ago))
        session.commit()
        claimed = jobs.claim(session, "host:1", lease_s=30, job_id=requeued.id)
        assert claimed is not None
        session.execute(update(Job).where(Job.id == requeued.id).values(started_at=long_ago))
        session.commit()
        assert jobs.release(session, requeued.id, 1, "its grade died", max_attempts=3) == "queued"

    class Unsent:
        def mark(self, job_id: int, only_if_absent: bool = False) -> bool:
            return True

    dispatch = CeleryDispatch(ServiceSettings(data=tmp_path, lease_s=3.0, dispatcher="celery", broker="redis://127.0.0.1:9/0"))
    dispatch.sessions, dispatch.sent = make, Unsent()  # type: ignore[assignment]
    dispatch.sweep()
    assert [dispatch.outbox.get_nowait()] == [(old.id, "interactive")] and dispatch.outbox.empty()  # not NEW either


def test_jobs_queued_before_the_queued_at_migration_get_their_creation_time(tmp_path: Path, db: str | None) -> None:
    url = db or f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url, "0001")
    at = {"at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}
    with connect(url).begin() as connection:
        connection.execute(text("INSERT INTO assignments (name, suite, published, daily_quota) VALUES ('hw4', 'public', :no, 5)"), {"no": False})
        for insert in ("INSERT INTO submissions (id, assignment, student, filename, sha256, size, seed, created_at) VALUES ('s1', 'hw4', 'ab', 'a.py', '', 1, 1, :at)",
                       "INSERT INTO jobs (submission_id, queue, state, attempt, created_at) VALUES ('s1', 'interactive', 'queued', 0, :at)"):
            connection.execute(text(insert).bindparams(bindparam("at", type_=UtcDateTime())), at)
    migrate(url)
    with sessions(connect(url))() as session:
        assert session.scalar(select(Job.queued_at)) == at["at"]
