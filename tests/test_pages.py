"""The web pages in a real browser: Debian's Chromium, headless, driven by Selenium through
chromedriver, against `vitgrade serve` with the stub grade (tests/stub_grade.py). A student logs
in, uploads and watches the grade arrive without a reload; an instructor reads the class and
regrades it; and the pages refuse what a caller may not see."""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from vitgrade.service.app import COOKIE
from vitgrade.service.auth import create_token
from vitgrade.service.db import connect, sessions
from vitgrade.service.pages import NOT_FINITE, TEMPLATES, attention_picture, pictures, training_picture, units
from vitgrade.service.settings import ServiceSettings

from .servers import STUB, Server, serving, wait_for
from .stub_grade import CAPTION, OUTPUT

CORRECT = Path(__file__).parent / "corpus" / "correct" / "einops_rearrange.py"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
EXPORT_HEADERS = {"scores": "student,score,max_score,tests_score,status,", "grades": "student,score,max_score,status",
                  "brightspace": "OrgDefinedId,hw4 Points Grade,End-of-Line Indicator", "canvas": ",hw4"}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: a quota of one submission a day, and grades that take a second
    (so a page sees a submission queued or running before it is done)."""
    data = tmp_path_factory.mktemp("pages") / "data"
    with serving(data, args=("--grader", STUB, "--daily-quota", "1", "--pool", "2"), env={"VITGRADE_STUB_SLEEP": "1"}) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("the page tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=DriverService(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def driver(browser: WebDriver, server: Server) -> WebDriver:
    """The browser, logged out."""
    browser.get(f"{server.url}/login")
    browser.delete_all_cookies()
    return browser


def token(server: Server, role: str, user: str) -> str:
    """A token made in the server's database directly (the CLI's way, without a process per token)."""
    engine = connect(ServiceSettings(data=server.data.resolve()).db_url)
    try:
        with sessions(engine)() as session:
            return create_token(session, role, user)  # type: ignore[arg-type]
    finally:
        engine.dispose()


def follow(driver: WebDriver, css: str) -> None:
    """Click what CSS selects and wait for the page it leads to."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()

    def gone(_: WebDriver) -> bool:
        try:
            page.tag_name  # noqa: B018
        except WebDriverException:  # stale, or "does not belong to the document": a new page is loaded
            return True
        return False

    waiting(driver, 30).until(gone)


def log_in(driver: WebDriver, server: Server, secret: str) -> None:
    driver.get(f"{server.url}/login")
    driver.find_element(By.ID, "token").send_keys(secret)
    follow(driver, "form.login button")


def waiting(driver: WebDriver, timeout: float = 60) -> WebDriverWait:
    """A wait that looks again when htmx has just swapped the element it held."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))


def submit_as(server: Server, student: str, by: str = "student") -> str:
    """A submission for STUDENT through the API, by the student or by an instructor; its id."""
    secret = token(server, by, student if by == "student" else "prof")
    with server.client(secret) as client, CORRECT.open("rb") as fh:
        accepted = client.post("/api/v1/submissions", files={"file": (CORRECT.name, fh)}, data={"student": student})
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["id"]


def graded(server: Server, submission: str) -> None:
    with server.client(token(server, "ta", "waiting")) as client:

        def finished() -> dict | None:
            view = client.get(f"/api/v1/submissions/{submission}").json()
            return view if view["state"] in {"done", "failed"} else None

        view: dict = wait_for(finished, 60, what="the grade")  # type: ignore[assignment]
    assert view["state"] == "done", view


def attribute(element: WebElement, name: str) -> str:
    return element.get_attribute(name) or ""


def texts(driver: WebDriver, css: str) -> list[str]:
    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, css)]


def check_screenshot(png: bytes, driver: WebDriver, element: WebElement) -> None:
    """PNG is a screenshot of the whole viewport that is not blank, and ELEMENT's box in it is
    drawn (a picture, in many colours)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height, ratio = driver.execute_script("return [innerWidth, innerHeight, devicePixelRatio]")
    assert image.size == (round(width * ratio), round(height * ratio))
    colours = image.getcolors(maxcolors=1 << 24) or []
    assert len(colours) >= 50, f"a nearly blank page: {len(colours)} colours"
    assert max(count for count, _ in colours) < 0.95 * image.width * image.height, "one colour fills the page"
    box = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]", element)
    left, top, right, bottom = (round(v * ratio) for v in box)
    assert 0 <= left < right <= image.width and 0 <= top < bottom <= image.height, f"{box} is not in view"
    drawn = image.crop((left, top, right, bottom)).getcolors(maxcolors=1 << 24) or []
    assert len(drawn) >= 16, f"the picture's box has {len(drawn)} colours: it is not drawn"


def test_a_student_uploads_and_watches_the_feedback_arrive(driver: WebDriver, server: Server) -> None:
    secret = token(server, "student", "ab1234")
    log_in(driver, server, secret)
    assert driver.current_url == f"{server.url}/"
    assert driver.find_element(By.ID, "quota").text.startswith("1 of 1 submissions left today for hw4")

    driver.find_element(By.ID, "file").send_keys(str(CORRECT))
    follow(driver, "form.upload button")
    assert "/submissions/" in driver.current_url
    assert driver.find_element(By.ID, "live").get_attribute("data-state") in {"queued", "running"}
    driver.execute_script("window.sameDocument = true")  # gone if the page were loaded again
    waiting(driver).until(lambda d: d.find_element(By.ID, "live").get_attribute("data-state") in {"done", "failed"})
    assert driver.execute_script("return window.sameDocument === true"), "the page was reloaded: htmx did not swap the state in"
    assert driver.find_element(By.ID, "live").get_attribute("data-state") == "done", driver.find_element(By.ID, "live").text

    # the feedback, as a student may see it before the due date
    assert driver.find_element(By.ID, "score").text == "1"
    assert texts(driver, "table.tests tr.test td.name") == ["a visible test"]
    assert texts(driver, "table.tests pre") == [OUTPUT]  # shown as text: its "<" is escaped
    assert driver.find_element(By.CSS_SELECTOR, "p.withheld").text.startswith("3 more tests are withheld")
    assert texts(driver, "table.units td")[:3] == ["sdpa", "1", "1 / 1"]

    # the attention map: two heatmaps on one scale, and a caption that is text, not markup
    figure = driver.find_element(By.CSS_SELECTOR, "figure.attention")
    maps = figure.find_elements(By.CSS_SELECTOR, "svg.heatmap")
    assert [m.get_attribute("class") for m in maps] == ["heatmap student", "heatmap reference"]
    fills = [[cell.get_attribute("fill") for cell in m.find_elements(By.CSS_SELECTOR, "rect.cell")] for m in maps]
    assert [len(f) for f in fills] == [64, 64] and len(set(fills[0])) > 5 and fills[0] != fills[1]
    assert "#fde725" in fills[1] and "#fde725" not in fills[0]  # one scale: its top is the reference's larger maximum
    assert figure.find_element(By.TAG_NAME, "figcaption").text.startswith(CAPTION)
    assert not figure.find_elements(By.TAG_NAME, "cls")
    assert not driver.find_elements(By.CSS_SELECTOR, "figure.training")  # its test is shown after the due date

    driver.execute_script("arguments[0].scrollIntoView()", figure)
    check_screenshot(driver.get_screenshot_as_png(), driver, maps[0])

    # back on the student's page: the submission, its score, and no quota left, so a second upload is refused
    follow(driver, "header a.brand")
    assert driver.find_element(By.ID, "quota").text.startswith("0 of 1 submissions left today")
    assert [r.get_attribute("data-state") for r in driver.find_elements(By.CSS_SELECTOR, "tr.submission")] == ["done"]
    assert texts(driver, "tr.submission td.score") == ["1 / 1"]
    driver.find_element(By.ID, "file").send_keys(str(CORRECT))
    follow(driver, "form.upload button")
    refused = driver.find_element(By.ID, "refused").text
    assert refused.startswith("429") and "ab1234 has used all 1 submissions for hw4 today" in refused


def test_an_instructor_reads_the_class_regrades_it_and_downloads(driver: WebDriver, server: Server) -> None:
    first, latest = submit_as(server, "cd5678"), submit_as(server, "cd5678", by="instructor")
    graded(server, first)
    graded(server, latest)
    log_in(driver, server, token(server, "instructor", "prof"))
    assert driver.current_url == f"{server.url}/instructor"

    row = driver.find_element(By.CSS_SELECTOR, 'table.class tr[data-student="cd5678"]')
    assert row.get_attribute("data-state") == "done" and row.find_element(By.CSS_SELECTOR, "td.score").text == "10 / 10"
    assert texts(driver, 'tr[data-student="cd5678"] td')[1] == "2"  # submissions; the link is to the latest
    assert attribute(row.find_element(By.TAG_NAME, "a"), "href") == f"{server.url}/submissions/{latest}"
    students = len(driver.find_elements(By.CSS_SELECTOR, "table.class tr.student"))
    bars = driver.find_elements(By.CSS_SELECTOR, "svg.histogram rect.bar")
    assert len(bars) == 10 and sum(int(attribute(b, "data-count")) for b in bars) == students
    assert any(float(attribute(b, "height")) > 0 for b in bars)
    rates = dict(zip(texts(driver, "table.pass-rates td:first-child"), texts(driver, "table.pass-rates td.rate")))
    assert rates["sdpa: a hidden test"] == "100%" and len(rates) == 4

    # the CSV links, fetched by the browser with its cookie
    links = {a.text: a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "a.export")}
    assert sorted(links) == sorted(f"{name}.csv" for name in EXPORT_HEADERS)
    fetch = "const done = arguments[1]; fetch(arguments[0]).then(r => r.text().then(t => done([r.status, t])))"
    for name, header in EXPORT_HEADERS.items():
        status, body = driver.execute_async_script(fetch, links[f"{name}.csv"])
        assert status == 200 and header in body.splitlines()[0], (name, body[:200])
        if name == "scores":
            assert any(line.startswith("cd5678,10.0,10.0") for line in body.splitlines())

    # regrade-all: the progress bar is polled in place until every job has finished
    driver.execute_script("window.sameDocument = true")
    driver.find_element(By.CSS_SELECTOR, "#regrade button").click()
    waiting(driver).until(lambda d: d.find_element(By.CSS_SELECTOR, "#regrade .progress").get_attribute("data-finished") == "true")
    assert driver.execute_script("return window.sameDocument === true")
    progress = driver.find_element(By.CSS_SELECTOR, "#regrade .progress")
    assert f"finished: {students} graded, 0 failed" in progress.text
    bar = progress.find_element(By.TAG_NAME, "progress")
    assert bar.get_attribute("value") == bar.get_attribute("max") == str(students)

    # a student's submission as staff see it: every test, and both pictures
    driver.get(f"{server.url}/instructor")
    follow(driver, 'tr[data-student="cd5678"] a')
    assert len(driver.find_elements(By.CSS_SELECTOR, "table.tests tr.test")) == 4
    assert not driver.find_elements(By.CSS_SELECTOR, "p.withheld")
    curve = driver.find_element(By.CSS_SELECTOR, "figure.training svg.curve")
    assert len(attribute(curve.find_element(By.CSS_SELECTOR, "polyline.student"), "points").split()) == 30
    assert len(attribute(curve.find_element(By.CSS_SELECTOR, "polygon.band"), "points").split()) == 60
    assert driver.find_element(By.CSS_SELECTOR, "figure.training figcaption").text.endswith("<batch 32>")
    driver.execute_script("arguments[0].scrollIntoView()", curve)
    check_screenshot(driver.get_screenshot_as_png(), driver, curve)


def test_the_pages_refuse_what_a_caller_may_not_see(driver: WebDriver, server: Server, tmp_path: Path) -> None:
    others = submit_as(server, "gh3456")
    secret = token(server, "student", "ef9012")
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        # no token: to the login page (and an htmx poll is told to go there)
        assert anonymous.get("/").status_code == 303 and anonymous.get("/").headers["location"] == "/login"
        assert anonymous.get(f"/submissions/{others}/live", headers={"HX-Request": "true"}).headers["HX-Redirect"] == "/login"
        # a wrong token: the form again, with 401
        page = {"origin": server.url}  # what a browser sends from the site's own login form
        wrong = anonymous.post("/login", data={"token": "vg_not-a-token"}, headers=page)
        assert wrong.status_code == 401 and COOKIE not in wrong.cookies
        assert anonymous.post("/login", data={"token": secret}).status_code == 403  # not from our page: no sign-in
        signed = anonymous.post("/login", data={"token": secret}, headers=page)
        assert signed.status_code == 303 and "HttpOnly" in signed.headers["set-cookie"]
        assert "samesite=strict" in signed.headers["set-cookie"].lower()
    with httpx.Client(base_url=server.url, cookies={COOKIE: secret}, timeout=30) as student:
        assert student.get("/instructor").status_code == 403
        assert student.get(f"/submissions/{others}").status_code == 404
        assert student.get(f"/submissions/{others}/live").status_code == 404
        assert student.post("/instructor/regrade", data={"assignment": "hw4"}).status_code == 403

    driver.get(f"{server.url}/submissions/{others}")
    assert driver.current_url == f"{server.url}/login"
    driver.find_element(By.ID, "token").send_keys("vg_not-a-token")
    follow(driver, "form.login button")
    assert driver.find_element(By.CSS_SELECTOR, "p.error").text.startswith("401")

    log_in(driver, server, secret)
    driver.get(f"{server.url}/instructor")
    assert driver.find_element(By.CSS_SELECTOR, "h1.status").text == "403"
    driver.get(f"{server.url}/submissions/{others}")
    assert driver.find_element(By.CSS_SELECTOR, "h1.status").text == "404"
    assert "gh3456" not in driver.page_source

    notes = shutil.copy(CORRECT, tmp_path / "notes.txt")  # not a kind the service grades: 422, with the reason
    driver.get(f"{server.url}/")
    driver.find_element(By.ID, "file").send_keys(str(notes))
    follow(driver, "form.upload button")
    assert driver.find_element(By.ID, "refused").text.startswith("422 · notes.txt: expected a .ipynb, .py or .zip file")

    # with a second assignment, the student chooses one, and its quota is shown in place
    with server.client(token(server, "instructor", "prof")) as instructor:
        assert instructor.put("/api/v1/assignments/hw5", json={"daily_quota": 5}).status_code == 200
    driver.get(f"{server.url}/")
    driver.execute_script("window.sameDocument = true")
    Select(driver.find_element(By.ID, "assignment")).select_by_value("hw5")
    waiting(driver, 20).until(lambda d: d.find_element(By.ID, "quota").text.startswith("5 of 5 submissions left today for hw5"))
    assert driver.execute_script("return window.sameDocument === true")

    follow(driver, "header form button")  # log out
    assert driver.current_url == f"{server.url}/login"
    driver.get(f"{server.url}/")
    assert driver.current_url == f"{server.url}/login"


def test_the_pictures_draw_what_a_broken_model_gives() -> None:
    """Not-a-number weights, a ragged map, an infinite loss and empty lists are drawn (grey cells,
    gaps in the line) rather than failing the page; and any text in a report is escaped."""
    attention = attention_picture({"caption": "c", "student": [[math.nan, 1.0], [0.5]], "reference": [[0.2, 0.8], [0.5, 0.5]]})
    assert attention["size"] == 2 and len(attention["student"]) == 3 and attention["student"][0][2] == NOT_FINITE
    assert attention["top"] == "1" and attention["student"][1][2] == attention["scale"][-1]
    training = training_picture({"caption": "t", "student": [3.0, math.inf, 1.0], "low": [2.0, 1.5, 0.5], "high": [3.5, 2.0, 1.2]})
    assert training["not_finite"] == 1 and len(training["line"].split()) == 2 and len(training["band"].split()) == 6
    empty = training_picture({"caption": "t", "student": [], "low": [], "high": []})
    assert empty["line"] == empty["band"] == ""

    markup = "<script>alert(1)</script>"
    report = {"score": 0.0, "max_score": 1.0, "status": "error", "error": markup, "withheld": 0, "budget_used_up": False,
              "adjustments": [], "diagnostics": [], "figures": {"training": {"caption": markup, "student": [1.0], "low": [], "high": []}},
              "tests": [{"name": markup, "unit": markup, "status": "failed", "score": 0.0, "max_score": 1.0, "output": markup}]}  # fmt: skip
    page = TEMPLATES.get_template("feedback.html").render(report=report, units=units(report["tests"]), pictures=pictures(report))
    assert "<script" not in page and page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 6
