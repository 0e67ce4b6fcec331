"""Suites: folders of test-case files with a suite.toml, resolved by name or path.

`public` is test_cases/public, `full` is public plus hidden, and any folder with a suite.toml
is a suite of its own. A suite's version carries a hash of its files, so a batch knows when a
regrade is due.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..contract import DEFAULT_CONTRACT, Contract

SUITE_FILE = "suite.toml"


class Section(BaseModel):
    """A table of suite.toml: unknown keys are errors, so a typo fails when the suite is loaded,
    not as an internal error in every student's report."""

    model_config = ConfigDict(extra="forbid")


class CourseSection(Section):
    wrong_files_penalty: float = Field(default=0.10, ge=0, le=1)
    late_penalty_per_day: float = Field(default=0.10, ge=0, le=1)
    max_late_days: int = Field(default=4, ge=0)
    not_executable_penalty: float = Field(default=0.20, ge=0, le=1)
    due: str | None = None  # ISO 8601 with a UTC offset


class PolicySection(Section):
    forbidden: Literal["from_scratch", "unit", "none"] = "from_scratch"


class TrainSection(Section):
    model: list[int | float] = Field(min_length=9, max_length=9)  # VisionTransformer(*model)
    train_images: int = Field(gt=0)
    held_out_images: int = Field(gt=0)
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    full_credit: float = Field(gt=0, le=1)
    half_credit: float = Field(gt=0, le=1)
    attempts: int = Field(default=1, ge=1, le=5)  # runs on fresh hidden seeds while below full credit; the best counts


class DataSection(Section):
    cifar100_root: str | None = None
    cifar10_root: str | None = None


class SuiteFile(Section):
    """suite.toml."""

    name: str
    version: str | int = "0"
    seed: int | None = None  # a fixtures-only suite grades with a fixed seed
    reference: str | None = None  # path of the reference solution, relative to the suite folder
    contract: Contract | None = None  # which notebook is graded (vitgrade.contract); --contract overrides it
    course: CourseSection | None = None
    policy: PolicySection | None = None
    train: TrainSection | None = None
    data: DataSection | None = None


class SuiteError(Exception):
    """The suite cannot be found or read; the message is one line."""


@dataclass
class Suite:
    name: str
    version: str
    dirs: list[Path]
    reference: Path | None = None  # the reference solution, for suites that compute live
    config: dict[str, Any] = field(default_factory=dict)
    fixed_seed: int | None = None  # a suite with precomputed fixtures grades with a fixed seed
    contract: Contract = DEFAULT_CONTRACT


BUNDLED_PUBLIC = Path(__file__).resolve().parents[1] / "public_suite"  # in an installed wheel


def course_root() -> Path:
    """The checkout holding test_cases/ and reference/: $VITGRADE_COURSE, else next to vitgrade/."""
    env = os.environ.get("VITGRADE_COURSE")
    return Path(env) if env else Path(__file__).resolve().parents[2]


def suite_dir(name: str) -> Path:
    """test_cases/<name> of the course checkout; a pip-installed vitgrade carries only `public`."""
    folder = course_root() / "test_cases" / name
    if folder.is_dir():
        return folder
    if name == "public" and BUNDLED_PUBLIC.is_dir():
        return BUNDLED_PUBLIC
    raise SuiteError(f"no {name} suite here (looked in {folder}); set VITGRADE_COURSE to the course folder")


def read_dir(path: Path) -> tuple[dict[str, Any], Path]:
    config_file = path / SUITE_FILE
    if not config_file.is_file():
        raise SuiteError(f"{path} is not a suite: it has no {SUITE_FILE}")
    try:
        raw = tomllib.loads(config_file.read_text())
        checked = SuiteFile.model_validate(raw)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{config_file} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SuiteError(f"{config_file}: {problems}") from None
    # The test cases read the tables as plain dicts; only what the file sets (and the defaults of
    # the tables it has) is there.
    return checked.model_dump(exclude_none=True), config_file


def content_hash(dirs: list[Path]) -> str:
    digest = hashlib.sha256()
    for folder in dirs:
        for file in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(file.relative_to(folder).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:12]


def resolve(spec: str) -> Suite:
    """'public', 'full' or a folder path."""
    if spec in {"public", "full", "hidden"}:
        dirs = [suite_dir("public"), suite_dir("hidden")] if spec == "full" else [suite_dir(spec)]
    else:
        dirs = [Path(spec)]
    configs = [read_dir(d.resolve()) for d in dirs]
    merged: dict[str, Any] = {}
    reference = None
    fixed_seed = None
    for config, config_file in configs:
        merged.update({k: v for k, v in config.items() if k not in {"name", "version", "contract"}})
        if "reference" in config:
            reference = (config_file.parent / config["reference"]).resolve()
        if "seed" in config:
            fixed_seed = int(config["seed"])
    if reference is not None:
        fixed_seed = None  # live reference: fresh inputs per run, seed recorded in the report
    name = spec if spec in {"public", "full", "hidden"} else str(configs[0][0].get("name", Path(spec).name))
    declared = "+".join(str(c.get("version", "0")) for c, _ in configs)
    return Suite(
        name=name,
        version=f"{declared}-{content_hash([d.resolve() for d in dirs])}",
        dirs=[d.resolve() for d in dirs],
        reference=reference,
        config=merged,
        fixed_seed=fixed_seed,
        contract=next((c["contract"] for c, _ in reversed(configs) if "contract" in c), DEFAULT_CONTRACT),
    )
