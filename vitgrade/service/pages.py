"""The web pages: server-rendered HTML (Jinja2, every string escaped) with htmx, vendored in
static/, for what changes while the page is open. A page is a thin layer over the Service, like the
API: a `Refused` becomes an HTML error page with its status, and a browser without a valid token
is sent to /login.

- /login, /logout: the token, pasted once, is kept in an HttpOnly, SameSite=Strict cookie, which
  the API accepts too (so the CSV links work from the page);
- /: a student's upload form, remaining quota and submissions;
- /submissions/{id}: the live state (htmx polls /submissions/{id}/live until it is done or
  failed), then the feedback with its pictures drawn here as inline SVG;
- /instructor: the class table, the score histogram, per-test pass rates, regrade-all with its
  progress, and the CSV downloads."""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import func, select

from .auth import COOKIE, Caller, lookup, same_origin
from .core import DEFAULT_ASSIGNMENT, EXPORTS, Refused, Service
from .db import Assignment, Submission

HERE = Path(__file__).parent
UNITS = ("sdpa", "mask", "patch", "mhsa", "block", "vit", "train", "policy")  # the feedback's order
FINISHED = ("done", "failed")  # the states after which a submission's page stops polling
POLL = "every 1s"


def when(iso: str | None) -> str:
    """An ISO 8601 time as the pages show it, in UTC."""
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC") if iso else ""


def number(value: float) -> str:
    """A score without needless decimals: 10, 2.5, 0.333."""
    return f"{value:.3f}".rstrip("0").rstrip(".") if math.isfinite(value) else str(value)


def eta(seconds: float) -> str:
    """An estimate as the pages say it."""
    if seconds < 1:
        return "in a moment"
    return f"in about {round(seconds)} s" if seconds < 120 else f"in about {round(seconds / 60)} min"


def plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                        trim_blocks=True, lstrip_blocks=True)  # fmt: skip
TEMPLATES.filters.update(when=when, number=number, eta=eta, segment=lambda s: quote(str(s), safe=""))
TEMPLATES.globals.update(plural=plural, POLL=POLL, FINISHED=FINISHED)


# -- pictures, as inline SVG
VIRIDIS = ((0x44, 0x01, 0x54), (0x3B, 0x52, 0x8B), (0x21, 0x91, 0x8C), (0x5E, 0xC9, 0x62), (0xFD, 0xE7, 0x25))
NOT_FINITE = "#999999"


def colour(fraction: float) -> str:
    """A point of the viridis scale, FRACTION in [0, 1]."""
    if not math.isfinite(fraction):
        return NOT_FINITE
    at = min(1.0, max(0.0, fraction)) * (len(VIRIDIS) - 1)
    low = min(int(at), len(VIRIDIS) - 2)
    mix = at - low
    return "#" + "".join(f"{round(a + (b - a) * mix):02x}" for a, b in zip(VIRIDIS[low], VIRIDIS[low + 1]))


def finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def attention_picture(figure: dict) -> dict:
    """Two heatmaps on one colour scale (0 to the larger maximum), as cells (x, y, fill, value)."""
    matrices = [figure["student"], figure["reference"]]
    top = max([*(v for m in matrices for row in m for v in finite(row)), 0.0]) or 1.0

    def cells(matrix: list[list[float]]) -> list[tuple[int, int, str, str]]:
        return [(x, y, colour(v / top if v is not None else math.nan), number(v) if v is not None else "none")
                for y, row in enumerate(matrix) for x, v in enumerate(row)]  # fmt: skip

    size = max([len(matrix) for matrix in matrices] + [len(row) for matrix in matrices for row in matrix] + [1])
    return {"caption": figure["caption"], "size": size, "top": number(top), "student": cells(figure["student"]),
            "reference": cells(figure["reference"]), "scale": [colour(i / 10) for i in range(11)]}  # fmt: skip


def training_picture(figure: dict, width: int = 480, height: int = 200) -> dict:
    """The student's loss per step as a line over the reference's band, scaled to WIDTH x HEIGHT
    inside a margin for the axes' labels."""
    left, right, top, bottom = 52, 8, 8, 28
    student, low, high = figure["student"], figure["low"], figure["high"]
    values = finite([*student, *low, *high]) or [0.0, 1.0]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    steps = max(len(student), len(low), len(high), 2)
    x = lambda i: left + (width - left - right) * i / (steps - 1)  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (hi - v) / (hi - lo)  # noqa: E731
    band = [(i, h, lo_) for i, (lo_, h) in enumerate(zip(low, high)) if math.isfinite(lo_) and math.isfinite(h)]
    polygon = [f"{x(i):.1f},{y(h):.1f}" for i, h, _ in band] + [f"{x(i):.1f},{y(lo_):.1f}" for i, _, lo_ in reversed(band)]
    line = [f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(student) if math.isfinite(v)]
    ticks = [(f"{y(v):.1f}", number(v)) for v in (hi, (hi + lo) / 2, lo)]
    return {"caption": figure["caption"], "width": width, "height": height, "left": left, "bottom": height - bottom,
            "right": width - right, "band": " ".join(polygon), "line": " ".join(line), "ticks": ticks, "steps": steps,
            "not_finite": len(student) - len(line)}  # fmt: skip


def pictures(report: dict) -> dict:
    figures = report.get("figures") or {}
    out = {}
    if figures.get("attention"):
        out["attention"] = attention_picture(figures["attention"])
    if figures.get("training"):
        out["training"] = training_picture(figures["training"])
    return out


def units(tests: list[dict]) -> list[dict]:
    """Each unit's subtotal, in the homework's order."""
    order = [u for u in UNITS if any(t["unit"] == u for t in tests)] + sorted({t["unit"] for t in tests} - set(UNITS))
    return [{"unit": u, "score": sum(t["score"] for t in tests if t["unit"] == u),
             "max_score": sum(t["max_score"] for t in tests if t["unit"] == u),
             "tests": sum(t["unit"] == u for t in tests)} for u in order]  # fmt: skip


def histogram(data: dict, width: int = 420, height: int = 160) -> dict:
    """Score histogram bars from the service's bins and counts."""
    counts, bins = data["counts"], data["bins"]
    most = max([*counts, 1])
    step = width / max(1, len(counts))
    bars = [{"x": f"{i * step + 1:.1f}", "width": f"{step - 2:.1f}", "height": f"{height * c / most:.1f}",
             "y": f"{height - height * c / most:.1f}", "count": c,
             "middle": f"{(i + 0.5) * step:.1f}", "label": f"{height - height * c / most - 3:.1f}", "low": number(bins[i]), "high": number(bins[i + 1])}
            for i, c in enumerate(counts)]  # fmt: skip
    edges = [(f"{i * step:.1f}", number(edge)) for i, edge in enumerate(bins)]
    return {"width": width, "height": height, "bars": bars, "edges": edges}


# -- the pages
class SignIn(Exception):
    """No valid token: a page sends the browser to /login."""


def html(name: str, code: int = 200, headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """Template NAME rendered with CONTEXT, as a response with status CODE."""
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), code, headers=headers)


def to_login(request: Request) -> Response:
    """Where a page sends a browser without a valid token: /login (for an htmx request, by its HX-Redirect header)."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": "/login"})
    return RedirectResponse("/login", 303)


class PageRoute(APIRoute):
    """A page's route: a refusal becomes the HTML error page with its status; no token, /login
    (for an htmx request, by its HX-Redirect header)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except SignIn:
                return to_login(request)
            except Refused as exc:
                headers = {k: v for k, v in exc.headers.items() if k.lower() != "www-authenticate"}
                return html("error.html", exc.status, headers, who=getattr(request.state, "who", None), status=exc.status,
                            message=exc.message)  # fmt: skip

        return page


def add_pages(app: FastAPI, service: Service, caller: Callable[[Request], Caller]) -> None:
    """The pages of APP, over SERVICE; CALLER is the API's way to know who is asking (the
    cookie or a bearer token)."""
    router = APIRouter(route_class=PageRoute, include_in_schema=False)

    def signed_in(request: Request) -> Caller:
        try:
            who = caller(request)
        except Refused as exc:
            if exc.status == 401:
                raise SignIn from None
            raise
        request.state.who = who
        return who

    def assignments() -> list[str]:
        with service.sessions() as session:
            return list(session.scalars(select(Assignment.name).order_by(Assignment.name)))

    def student_page(who: Caller, chosen: str | None, status: int = 200, error: str | None = None,
                     headers: dict[str, str] | None = None) -> HTMLResponse:  # fmt: skip
        names = assignments()
        chosen = chosen if chosen in names else (names[0] if names and DEFAULT_ASSIGNMENT not in names else DEFAULT_ASSIGNMENT)
        with service.sessions() as session:
            quota = service.quota(session, service.assignment(session, chosen), who.user)
        submissions = service.listing(who, limit=200)
        return html("student.html", status, headers, who=who, assignments=names, chosen=chosen, quota=quota,
                    submissions=submissions, error=error, status=status)  # fmt: skip

    def submission_context(who: Caller, submission_id: str) -> dict:
        view = service.get(who, submission_id)
        report = view["report"]
        extra = {"units": units(report["tests"]), "pictures": pictures(report)} if report else {}
        return {"who": who, "view": view, "report": report, **extra}

    @router.get("/login")
    def login_form() -> HTMLResponse:
        return html("login.html", who=None, error=None)

    @router.post("/login")
    def login(request: Request, token: str = Form("")) -> Response:
        if not same_origin(request.headers, request.url.netloc):  # no signing a victim in as someone else
            raise Refused(403, "sign in from this site's own login page")
        token = token.strip()
        with service.sessions() as session:
            found = lookup(session, token) if token else None
        if found is None:
            return html("login.html", 401, who=None, error="That token is not valid: paste the whole token you were given.")
        response = RedirectResponse("/instructor" if found.staff else "/", 303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/", secure=request.url.scheme == "https")
        return response

    @router.post("/logout")
    def logout() -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @router.get("/")
    def home(request: Request, assignment: str | None = None) -> Response:
        who = signed_in(request)
        if who.staff:
            return RedirectResponse("/instructor", 303)
        return student_page(who, assignment)

    @router.post("/submit")
    def submit(request: Request, file: UploadFile | None = File(None), assignment: str | None = Form(None)) -> Response:
        who = signed_in(request)
        try:
            if file is None or not file.filename:
                raise Refused(422, "choose a file to upload (.ipynb, .py or .zip)")
            view = service.submit(who, file.file, file.filename, assignment, None)
        except Refused as exc:
            if exc.status == 404 or who.staff:
                raise
            return student_page(who, assignment, exc.status, exc.message, exc.headers)
        return RedirectResponse(f"/submissions/{quote(view['id'], safe='')}", 303)

    @router.get("/submissions/{submission_id}")
    def submission(request: Request, submission_id: str) -> HTMLResponse:
        return html("submission.html", **submission_context(signed_in(request), submission_id))

    @router.get("/submissions/{submission_id}/live")
    def live(request: Request, submission_id: str) -> HTMLResponse:
        return html("live.html", **submission_context(signed_in(request), submission_id))

    @router.get("/instructor")
    def instructor(request: Request, assignment: str | None = None) -> HTMLResponse:
        who = signed_in(request)
        if not who.staff:
            raise Refused(403, "the instructor's page is for course staff")
        names = assignments()
        chosen = assignment or DEFAULT_ASSIGNMENT
        stats = service.stats(who, chosen)  # refuses an unknown assignment
        with service.sessions() as session:  # each student's latest submission, and how many they made
            latest = service.latest(session, chosen)
            counts = dict(session.execute(select(Submission.student, func.count()).where(Submission.assignment == chosen)
                                          .group_by(Submission.student)).tuples().all())  # fmt: skip
            rows = [{**service.view(session, who, latest[s]), "count": counts.get(s, 0)} for s in sorted(latest)]
        return html("instructor.html", who=who, assignments=names, chosen=chosen, rows=rows, stats=stats,
                    histogram=histogram(stats["histogram"]), exports=EXPORTS)  # fmt: skip

    @router.post("/instructor/regrade")
    def regrade_all(request: Request, assignment: str = Form(DEFAULT_ASSIGNMENT)) -> HTMLResponse:
        progress = service.regrade_all(signed_in(request), assignment)
        return html("regrade.html", progress=progress)

    @router.get("/instructor/regrades/{regrade_id}")
    def regrade_progress(request: Request, regrade_id: int) -> HTMLResponse:
        return html("regrade.html", progress=service.regrade_progress(signed_in(request), regrade_id))

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

