"""The HTTP API (FastAPI): `create_app(settings)` wires the database, the dispatcher, the reaper
and the webhook sender, all held by the app (the service keeps no module state).

Uploads are capped, and their callers authenticated, before the multipart body is read (413,
401); callers authenticate with a bearer token (or the pages' cookie); a refusal is JSON
{"detail": ...} with its status."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, File, Form, Path, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import func, select, text
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..contract import Contract
from . import jobs
from .auth import COOKIE, SAFE_METHODS, Caller, lookup, same_origin
from .core import Refused, Service
from .db import Assignment, Job, connect, migrate, sessions
from .dispatch import DISPATCHERS, periodically
from .pages import add_pages, to_login
from .settings import QUEUES, ServiceSettings
from .webhooks import Sender

NAME = r"^[A-Za-z0-9_.-]{1,64}$"  # an assignment's name: it is a path segment and a CSV file name
UPLOADS = {"/api/v1/submissions": False, "/submit": True}  # the routes POSTed an upload to, and whether each is a page's


class TooLarge(Exception):
    pass


def refusal(exc: Refused) -> JSONResponse:
    return JSONResponse({"detail": exc.message}, exc.status, headers=exc.headers)


class UploadCap:
    """ASGI middleware: a body over LIMIT bytes is refused with 413 before anything parses it, by
    its Content-Length when it states one and by counting when it is streamed; and an upload whose
    caller AUTHENTICATE does not know is refused before its body is read (the API's 401, or the
    page's way to /login), so that nobody without a token makes the service spool a body."""

    def __init__(self, app: ASGIApp, limit: int, authenticate: Callable[[Request], Caller]) -> None:
        self.app, self.limit, self.authenticate = app, limit, authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        html = b"text/html" in headers.get(b"accept", b"")  # a page's form: a page, not JSON
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self.refuse(send, html)
        if scope["method"] == "POST" and scope["path"] in UPLOADS:
            unknown = await self.unknown(Request(scope), UPLOADS[scope["path"]])
            if unknown is not None:
                return await unknown(scope, receive, send)
        seen = 0
        over = refused = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                over = True
                raise TooLarge  # whatever the app makes of it (FastAPI: a 400), the caller gets the 413
            return message

        async def sending(message: Message) -> None:
            nonlocal refused
            if not over:
                await send(message)
            elif not refused:
                refused = True
                await self.refuse(send, html)

        with contextlib.suppress(TooLarge):
            await self.app(scope, counted, sending)
        if over and not refused:
            await self.refuse(send, html)

    async def unknown(self, request: Request, page: bool) -> Response | None:
        """The response to an upload from a caller without a valid token (None: the route decides, as for any other refusal)."""
        try:
            await run_in_threadpool(self.authenticate, request)
        except Refused as exc:
            if exc.status == 401:
                return to_login(request) if page else refusal(exc)
        return None

    async def refuse(self, send: Send, html: bool) -> None:
        message = b"the upload is larger than this service accepts (%d bytes)" % self.limit
        body = b"<!doctype html><title>413</title><h1>413</h1><p>%s</p><p><a href=/>back</a></p>" % message if html \
            else b'{"detail":"%s"}' % message
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/html; charset=utf-8" if html else b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


class AssignmentIn(BaseModel):
    """The fields a PUT changes (absent: unchanged). A due date must say its zone; a webhook needs its secret."""

    model_config = ConfigDict(extra="forbid")
    suite: str = Field(default="full", min_length=1, max_length=255)
    contract: Contract | None = None
    due: AwareDatetime | None = None
    published: bool = False
    daily_quota: int = Field(default=20, ge=1)
    webhook_url: AnyHttpUrl | None = None
    webhook_secret: str | None = Field(default=None, min_length=16, max_length=200)

    @field_validator("suite")
    @classmethod
    def known_suite(cls, value: str) -> str:
        from ..runner.suite import SuiteError, resolve

        try:
            resolve(value)
        except SuiteError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def signed(self) -> AssignmentIn:
        if "webhook_url" in self.model_fields_set and self.webhook_url is not None and not self.webhook_secret:
            raise ValueError("a webhook_url needs a webhook_secret (16 characters or more) to sign its deliveries")
        return self


def assignment_view(row: Assignment, caller: Caller) -> dict:
    view = {"name": row.name, "suite": row.suite, "contract": row.contract, "published": row.published,
            "due": row.due.isoformat() if row.due else None, "daily_quota": row.daily_quota}  # fmt: skip
    if caller.role == "instructor":
        view["webhook_url"] = row.webhook_url
    return view


class Metrics:
    """Prometheus metrics of one app: requests and latencies, and the queue read from the database."""

    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vitgrade_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("vitgrade_http_request_seconds", "HTTP latency", ["route"], registry=self.registry)
        self.service = service
        self.registry.register(self)  # type: ignore[arg-type]

    def collect(self) -> Any:
        gauge = GaugeMetricFamily("vitgrade_jobs", "jobs by queue and state", labels=["queue", "state"])
        with self.service.sessions() as session:
            for queue, state, count in session.execute(select(Job.queue, Job.state, func.count()).group_by(Job.queue, Job.state)):
                gauge.add_metric([queue, state], count)
        yield gauge


def create_app(settings: ServiceSettings, background: bool = True) -> FastAPI:
    """The service for SETTINGS. BACKGROUND: also start the dispatcher, the reaper and the webhook sender."""
    migrate(settings.db_url)
    service = Service(settings, sessions(connect(settings.db_url)), DISPATCHERS[settings.dispatcher](settings))
    service.ensure_default()
    metrics = Metrics(service)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        threads = []
        if background:
            service.dispatch.start()

            def reap() -> None:
                with service.sessions() as session:
                    for job in jobs.reap(session, settings.max_attempts):
                        service.dispatch.notify(job)

            sender = Sender(service.sessions)
            threads = [threading.Thread(target=periodically, args=(stop, settings.lease_s / 3, reap), daemon=True, name="reaper"),
                       threading.Thread(target=periodically, args=(stop, 1.0, sender.send_due), daemon=True, name="webhooks")]  # fmt: skip
            for thread in threads:
                thread.start()
        yield
        stop.set()
        for thread in threads:
            thread.join(15)
        if background:
            service.dispatch.stop()

    app = FastAPI(title="vitgrade", version=__version__, lifespan=lifespan,
                  description="Grades the Vision Transformer homework (HW4) as a service.")  # fmt: skip
    app.state.service = service

    def caller(request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
        if token and not header and request.method not in SAFE_METHODS and not same_origin(request.headers, request.url.netloc):
            raise Refused(403, "a cookie authorizes changes only from this site's own pages")
        with service.sessions() as session:
            found = lookup(session, token) if token else None
        if found is None:
            raise Refused(401, "a valid token is needed (Authorization: Bearer ...)", {"WWW-Authenticate": "Bearer"})
        return found

    app.state.caller = caller
    app.add_middleware(UploadCap, limit=settings.max_upload_bytes, authenticate=caller)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "other")
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return refusal(exc)

    @app.post("/api/v1/submissions", status_code=202)
    async def submit(file: UploadFile = File(...), assignment: str | None = Form(None), student: str | None = Form(None),
                     who: Caller = Depends(caller)) -> dict:  # fmt: skip
        return await run_in_threadpool(service.submit, who, file.file, file.filename or "", assignment, student)

    @app.get("/api/v1/submissions/{submission_id}")
    def submission(submission_id: str, who: Caller = Depends(caller)) -> dict:
        return service.get(who, submission_id)

    @app.get("/api/v1/submissions")
    def submissions(assignment: str | None = None, student: str | None = None, state: str | None = None,
                    limit: int = 200, who: Caller = Depends(caller)) -> list[dict]:  # fmt: skip
        return service.listing(who, assignment, student, state, min(max(1, limit), 1000))

    @app.post("/api/v1/submissions/{submission_id}/regrade", status_code=202)
    def regrade(submission_id: str, who: Caller = Depends(caller)) -> dict:
        return service.regrade(who, submission_id)

    @app.get("/api/v1/quota")
    def quota(assignment: str | None = None, who: Caller = Depends(caller)) -> dict:
        with service.sessions() as session:
            return service.quota(session, service.assignment(session, assignment), who.user)

    @app.get("/api/v1/assignments")
    def assignments(who: Caller = Depends(caller)) -> list[dict]:
        with service.sessions() as session:
            return [assignment_view(row, who) for row in session.scalars(select(Assignment).order_by(Assignment.name))]

    @app.put("/api/v1/assignments/{name}")
    def set_assignment(body: AssignmentIn, name: str = Path(pattern=NAME), who: Caller = Depends(caller)) -> dict:
        service.require(who, "instructor")
        with service.sessions() as session:
            row = session.get(Assignment, name)
            if row is None:
                row = Assignment(name=name, suite=settings.suite, daily_quota=settings.daily_quota, published=False)
                session.add(row)
            for key, value in body.model_dump(exclude_unset=True).items():
                setattr(row, key, str(value) if key == "webhook_url" and value is not None else value)
            session.commit()
            return assignment_view(row, who)

    @app.post("/api/v1/assignments/{name}/regrade", status_code=202)
    def regrade_all(name: str, who: Caller = Depends(caller)) -> dict:
        return service.regrade_all(who, name)

    @app.get("/api/v1/regrades/{regrade_id}")
    def regrade_progress(regrade_id: int, who: Caller = Depends(caller)) -> dict:
        return service.regrade_progress(who, regrade_id)

    @app.get("/api/v1/assignments/{name}/stats")
    def stats(name: str, who: Caller = Depends(caller)) -> dict:
        return service.stats(who, name)

    @app.get("/api/v1/assignments/{name}/export/{export}.csv")
    def export(name: str, export: str, who: Caller = Depends(caller)) -> Response:
        text_csv = service.export(who, name, export)
        headers = {"Content-Disposition": f'attachment; filename="{name}-{export}.csv"'}
        return PlainTextResponse(text_csv, media_type="text/csv", headers=headers)

    @app.get("/healthz")
    def healthz() -> dict:
        with service.sessions() as session:
            session.execute(text("SELECT 1"))
            queued = session.scalar(select(func.count()).select_from(Job).where(Job.state == "queued"))
        return {"ok": True, "version": __version__, "dispatcher": settings.dispatcher, "queues": list(QUEUES), "queued": queued}

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    add_pages(app, service, caller)
    return app
