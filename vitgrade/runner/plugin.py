"""The vitgrade pytest plugin: fixtures for test cases and one TestResult per case.

Test cases run in the trusted process as ordinary pytest functions. The plugin gives them the
`student` proxy, turns each outcome into a status and a student-facing message, and never puts
test source or tracebacks into a message: hidden test text must not reach a report.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from ..report.models import TestResult
from ..submission import Chunk, Extracted
from .budget import Budget
from .cases import UNITS
from .figures import FigureBook
from .judge import NOTES
from .policy import apply_forbidden_policy, forbidden_uses, runtime_units
from .scoring import Dependency, apply_dependencies
from .session import StudentError, WorkerFailure, WorkerSession
from .student import BudgetExhausted, Judging, Student
from .suite import Suite

LIVE_FIXTURES = "fixture_data.py"
IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
INTERNAL_ERROR = "internal error in this test case; the instructor has been notified"


def case_mark(item: pytest.Item) -> pytest.Mark:
    mark = item.get_closest_marker("vitgrade")
    if mark is None:
        raise pytest.UsageError(f"{item.nodeid} has no @case(...) declaration")
    return mark


def test_name(item: pytest.Item, mark: pytest.Mark) -> str:
    if mark.kwargs.get("name"):
        return str(mark.kwargs["name"])
    doc = getattr(getattr(item, "function", None), "__doc__", None)
    return doc.strip().splitlines()[0] if doc and doc.strip() else item.name


def load_module(name: str, path: Path) -> ModuleType:
    """Import the reference solution (or a suite's fixture builder) by path, in the trusted process only."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise pytest.UsageError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class VitgradePlugin:
    def __init__(
        self,
        session: WorkerSession,
        suite: Suite,
        seed: int,
        extracted: Extracted,
        log: Callable[[str], None],
        budget: Budget,
        judging: Judging,
    ):
        self.session = session
        self.budget = budget
        self.judging = judging
        self.chunks = extracted.chunks
        self.extracted = extracted
        self.checkpoint_bytes = extracted.checkpoint
        self.from_scratch: list[bool] = []
        self.dependencies: list[Dependency] = []
        self.suite = suite
        self.run_seed = seed
        self.log = log
        self.results: list[TestResult] = []
        self.collect_errors: list[str] = []
        self._reference: ModuleType | None = None
        self._live: dict[Path, dict[str, dict[str, torch.Tensor]]] = {}

    # ------------------------------------------------------------ fixtures

    @pytest.fixture
    def student(self, request: pytest.FixtureRequest) -> Student:
        if self.budget.remaining() <= 0:
            self.budget.used_up = True
            raise BudgetExhausted(self.budget.message())
        return Student(self.session, float(case_mark(request.node).kwargs["timeout"]), self.budget, self.judging)

    @pytest.fixture
    def reference(self) -> ModuleType:
        return self.reference_module()

    def reference_module(self) -> ModuleType:
        if self.suite.reference is None:
            raise pytest.UsageError("this suite declares no reference; use precomputed fixtures")
        if self._reference is None:
            self._reference = load_module("vitgrade_reference", self.suite.reference)
        return self._reference

    @pytest.fixture
    def figures(self, request: pytest.FixtureRequest) -> FigureBook:
        return FigureBook(self.judging.figures, test_name(request.node, case_mark(request.node)))

    @pytest.fixture
    def seed(self) -> int:
        return self.run_seed

    @pytest.fixture
    def rng(self, request: pytest.FixtureRequest) -> torch.Generator:
        """A generator seeded from the run's seed and the test's name: stable across regrades."""
        digest = hashlib.sha256(f"{self.run_seed}:{request.node.name}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") & (2**63 - 1))

    @pytest.fixture
    def fixtures(self, request: pytest.FixtureRequest) -> Callable[[str], dict[str, torch.Tensor]]:
        """The data of the suite's public cases. Where the suite has a live reference (the
        instructor's grade), computed afresh from this run's seed by the folder's fixture_data.py,
        so nothing the student kit ships can be replayed; else the stored safetensors files."""
        folder = Path(request.node.path).parent
        live = folder / LIVE_FIXTURES
        if self.suite.reference is None or not live.is_file():
            return lambda name: load_file(folder / "fixtures" / f"{name}.safetensors")
        if folder not in self._live:
            builder = load_module(f"vitgrade_fixture_data_{len(self._live)}", live)
            self._live[folder] = builder.build(self.reference_module(), self.run_seed)
        data = self._live[folder]
        return lambda name: data[name]

    @pytest.fixture
    def source(self) -> list[Chunk]:
        return self.chunks

    @pytest.fixture
    def checkpoint(self) -> bytes | None:
        """best_model.pth from a zip submission, as bytes: only ever loaded inside the worker."""
        return self.checkpoint_bytes

    @pytest.fixture
    def suite_config(self) -> dict[str, Any]:
        return self.suite.config

    # ------------------------------------------------------------ hooks

    def pytest_configure(self, config: pytest.Config) -> None:
        config.addinivalue_line("markers", "vitgrade(unit, points, name, visibility, timeout): a graded case")

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Every item must be a declared case; only the contract's cases run, unit by unit."""
        counted = {item.nodeid for item in items if self.suite.contract in case_mark(item).kwargs["points"]}
        if len(counted) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in counted])
            items[:] = [item for item in items if item.nodeid in counted]
        items.sort(key=lambda item: UNITS.index(case_mark(item).kwargs["unit"]))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(f"{report.nodeid}: {str(report.longrepr).splitlines()[-1][:300]}")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        self._start = time.monotonic()
        self._outcome: tuple[str, str] | None = None
        notes: list[str] = []
        token = NOTES.set(notes)
        try:
            yield
        finally:
            NOTES.reset(token)
        mark = case_mark(item)
        status, message = self._outcome or ("passed", "")
        message = " ".join([*notes, message]).strip()
        points = float(mark.kwargs["points"][self.suite.contract])
        self.from_scratch.append(bool(mark.kwargs.get("from_scratch", True)))
        self.dependencies.append(Dependency(bool(mark.kwargs.get("anchor", False)), mark.kwargs.get("requires")))
        self.results.append(
            TestResult(
                name=test_name(item, mark),
                unit=str(mark.kwargs["unit"]),
                score=points if status == "passed" else 0.0,
                max_score=points,
                status=status,  # type: ignore[arg-type]
                output=message,
                visibility=mark.kwargs["visibility"],
                duration_s=round(time.monotonic() - self._start, 3),
            )
        )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
        yield
        if call.excinfo is None or self._outcome is not None:
            return
        self._outcome = self.classify(item, call.excinfo.value)

    def classify(self, item: pytest.Item, exc: BaseException) -> tuple[str, str]:
        """Map an exception to (status, message) without exposing test code."""
        if isinstance(exc, pytest.skip.Exception):
            return "skipped", str(exc.msg) if hasattr(exc, "msg") else "skipped"
        if isinstance(exc, WorkerFailure):
            return exc.status, str(exc)
        if isinstance(exc, BudgetExhausted):
            return "timeout", str(exc)
        if isinstance(exc, StudentError):
            message = exc.student_message()
            if exc.info.kind == "missing":
                message = next(filter(None, map(self.extracted.why_missing, IDENTIFIER.findall(exc.info.message))), message)
            return ("failed" if exc.info.kind == "not_implemented" else "error"), message
        if isinstance(exc, AssertionError):
            return "failed", str(exc) or "wrong result"
        self.log(f"{item.nodeid}: {''.join(traceback.format_exception(exc))}")
        return "error", INTERNAL_ERROR


def pytest_args(suite: Suite, ini: Path) -> list[str]:
    """Quiet, cache-free, plain-assert pytest over the suite's folders, with vitgrade's plugin only:
    a pytest plugin installed beside the grader (one that reorders, reseeds or drops tests) takes no part."""
    return [
        *map(str, suite.dirs),
        "--disable-plugin-autoload",
        "-c",
        str(ini),
        "--rootdir",
        str(ini.parent),
        "-p",
        "no:cacheprovider",
        "-p",
        "no:terminal",
        "-p",
        "no:stepwise",
        "--assert=plain",
        "--import-mode=importlib",
        "-s",
        "-W",
        "ignore",
    ]


def run_suite(
    session: WorkerSession,
    suite: Suite,
    seed: int,
    extracted: Extracted,
    scratch: Path,
    budget: Budget,
    judging: Judging,
) -> tuple[list[TestResult], list[str]]:
    """Run every case of the suite in this (trusted) process, then apply the forbidden-API policy.
    Returns the results and any collection errors."""
    ini = scratch / "pytest.ini"
    ini.write_text("[pytest]\n")
    plugin = VitgradePlugin(session, suite, seed, extracted, lambda text: print(text, file=sys.stderr), budget, judging)
    code = pytest.main(pytest_args(suite, ini), plugins=[plugin])
    if code == pytest.ExitCode.INTERRUPTED:
        raise KeyboardInterrupt  # pytest swallowed it: a partial run must not become a report
    if code in (pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.NO_TESTS_COLLECTED):
        plugin.collect_errors.append(f"pytest ended with {pytest.ExitCode(code).name}")
    policy = str(suite.config.get("policy", {}).get("forbidden", "from_scratch"))
    # The policy first: an anchor whose unit used forbidden attention has not reproduced anything.
    withheld = apply_forbidden_policy(
        plugin.results, plugin.from_scratch, forbidden_uses(extracted.chunks), runtime_units(session.forbidden_seen), policy
    )
    results = apply_dependencies(withheld, plugin.dependencies)
    return results, plugin.collect_errors

