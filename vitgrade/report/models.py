"""The score report: a pydantic model with a published JSON Schema (schemas/report.schema.json)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..contract import DEFAULT_CONTRACT, Contract
from ..protocol import Diagnostic
from ..text import safe_data

SCHEMA_VERSION: Literal["1.0"] = "1.0"
Status = Literal["passed", "failed", "error", "timeout", "oom", "crashed", "skipped"]
Visibility = Literal["hidden", "after_due_date", "after_published", "visible"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmissionInfo(Strict):
    path: str
    sha256: str | None = None
    kind: Literal["ipynb", "py", "zip"] | None = None
    member: str | None = None  # the file graded inside a zip
    student: str | None = None
    submitted_at: str | None = None  # ISO 8601, from the LMS export or a times CSV


class Adjustment(Strict):
    """One course-policy penalty: a fraction of the test score, with its reason."""

    reason: str
    fraction: float
    points: float = 0.0


class SuiteInfo(Strict):
    name: str
    version: str
    contract: Contract = DEFAULT_CONTRACT  # the notebook graded: vitgrade's edition or the course's own


class IsolationInfo(Strict):
    """The isolation that was actually in force for the worker."""

    backend: str
    network: str
    filesystem: str
    user: str
    pid_namespace: bool = False
    limits: dict[str, int | str] = Field(default_factory=dict)


class Environment(Strict):
    python: str
    torch: str
    device: str
    vitgrade: str
    isolation: IsolationInfo | None = None


class TestResult(Strict):
    name: str
    unit: str
    score: float
    max_score: float
    status: Status
    output: str = ""
    visibility: Visibility = "visible"
    duration_s: float = 0.0


class ProgramRecord(Strict):
    """A program the grade judged: its sha256 (the file name where programs are stored) and what it is."""

    sha256: str
    what: str


class StudentOutput(Strict):
    """What the student's code printed (stdout and stderr together), capped."""

    text: str = ""
    total_bytes: int = 0
    truncated: bool = False


class AttentionMap(Strict):
    """One head's attention weights on an input the grader chose: the student's beside the reference's."""

    test: str  # the test that recorded it: the picture is shown when that test is
    caption: str
    student: list[list[float]]  # (queries, keys), each row sums to 1
    reference: list[list[float]]


class TrainingCurve(Strict):
    """The loss per step of the grader's short training run of the student's model, and the band
    the reference's runs fall in (the suite's calibration)."""

    test: str
    caption: str
    student: list[float]
    low: list[float]
    high: list[float]


class Figures(Strict):
    """What a picture says better than text, for the feedback page; absent when not computed."""

    attention: AttentionMap | None = None
    training: TrainingCurve | None = None


class Report(Strict):
    """Every string in it is made safe here, once: whatever a submission or a worker wrote, the
    report can be written as JSON and UTF-8."""

    @model_validator(mode="before")
    @classmethod
    def safe_strings(cls, data: Any) -> Any:
        return safe_data(data) if isinstance(data, dict) else data

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    status: Literal["ok", "error"] = "ok"
    error: str | None = None  # one line, when no test could run at all
    submission: SubmissionInfo
    suite: SuiteInfo
    score: float = 0.0  # after adjustments
    max_score: float = 0.0
    tests_score: float = 0.0  # the sum of the tests' scores, before adjustments
    adjustments: list[Adjustment] = Field(default_factory=list)
    seed: int
    budget_s: float | None = None  # the whole grade's time budget
    budget_used_up: bool = False  # some tests were cut short or not run because the budget ended
    duration_s: float = 0.0
    environment: Environment | None = None  # None when the grading process itself failed
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    tests: list[TestResult] = Field(default_factory=list)
    verified: bool = True  # every verdict came from a program the grader ran itself
    programs: list[ProgramRecord] = Field(default_factory=list)
    student_output: StudentOutput = Field(default_factory=StudentOutput)
    figures: Figures = Field(default_factory=Figures)
