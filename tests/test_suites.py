"""The suites themselves: fixtures in sync with the reference, points as the README says, and
every case declared with its unit, points and visibility."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT
from vitgrade.contract import CONTRACT_UNITS, CONTRACTS
from vitgrade.runner.cases import UNITS, contract_points

SUITES = ROOT / "test_cases"


def declared_cases(folder: Path) -> list[dict]:
    """The @case(...) arguments of every test function, read statically."""
    cases = []
    for file in sorted(folder.glob("test_*.py")):
        for node in ast.parse(file.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                marks = [d for d in node.decorator_list if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "case"]
                assert len(marks) == 1, f"{file.name}::{node.name} needs exactly one @case(...)"
                mark = marks[0]
                kwargs = {k.arg: ast.literal_eval(k.value) for k in mark.keywords}
                cases.append({"unit": kwargs["unit"], "points": kwargs["points"], "visibility": kwargs.get("visibility", "visible")})
    return cases


# Stored fixtures are checked on whatever CPU runs the tests: float32 results may differ there by an
# ulp or a few (2.4e-7 and 3.6e-7 seen on mhsa/out), so they are compared within FIXTURE_ATOL/RTOL, ten
# times tighter than the grading tolerance (expect_close: atol 1e-5, rtol 1e-4). A stale fixture
# (different inputs or reference) is off by far more.
FIXTURE_ATOL, FIXTURE_RTOL = 1e-6, 1e-5


def stale_fixtures(built: dict[str, dict[str, torch.Tensor]]) -> list[str]:
    problems = []
    for name, tensors in built.items():
        stored = load_file(SUITES / "public" / "fixtures" / f"{name}.safetensors")
        if set(stored) != set(tensors):
            problems.append(f"{name}: keys {sorted(stored)} != {sorted(tensors)}")
            continue
        for key, value in tensors.items():
            try:
                torch.testing.assert_close(stored[key], value, atol=FIXTURE_ATOL, rtol=FIXTURE_RTOL)
            except AssertionError as exc:
                problems.append(f"{name}/{key}: {str(exc).splitlines()[0]}")
    return problems


def builder():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("build_public_fixtures", SUITES / "build_public_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_public_fixtures_match_the_reference() -> None:
    problems = stale_fixtures(builder().build())
    assert not problems, f"stale fixtures (run python test_cases/build_public_fixtures.py): {problems}"


def test_the_fixture_check_tells_an_ulp_from_a_stale_fixture() -> None:
    built = builder().build()
    out = built["mhsa"]["out"]
    ulp = {**built, "mhsa": {**built["mhsa"], "out": torch.nextafter(out, out + 1)}}
    assert not stale_fixtures(ulp)
    stale = {**built, "mhsa": {**built["mhsa"], "out": out + 1e-4}}
    assert [p for p in stale_fixtures(stale) if p.startswith("mhsa/out")]


def test_a_suite_names_its_contract(tmp_path: Path) -> None:
    from vitgrade.runner.suite import SuiteError, resolve

    (tmp_path / "suite.toml").write_text('name = "mine"\ncontract = "course"\n')
    assert resolve(str(tmp_path)).contract == "course"
    assert resolve("public").contract == "edition"
    (tmp_path / "suite.toml").write_text('name = "mine"\ncontract = "courses"\n')
    with pytest.raises(SuiteError, match="contract"):
        resolve(str(tmp_path))


def test_points_match_the_readme() -> None:
    """Each contract's 50 points, per unit, public and hidden, as the README's table says."""
    cell = r" (\d+|–)"
    rows = re.findall(rf"^\| (\w+) \|{cell} \|{cell} \|{cell} \|{cell} \|{cell} \|{cell} \|$", (ROOT / "README.md").read_text(), re.M)
    table = {unit: tuple(0 if v == "–" else int(v) for v in values) for unit, *values in rows}
    public, hidden = declared_cases(SUITES / "public"), declared_cases(SUITES / "hidden")
    assert set(table) == set(UNITS)
    for index, contract in enumerate(CONTRACTS):
        def points(cases: list[dict], unit: str) -> float:
            return sum(contract_points(c["unit"], c["points"]).get(contract, 0) for c in cases if c["unit"] == unit)  # noqa: B023

        for unit in UNITS:
            pub, hid = points(public, unit), points(hidden, unit)
            assert table[unit][3 * index : 3 * index + 3] == (pub, hid, pub + hid), (contract, unit)
            assert (pub + hid > 0) == (unit in CONTRACT_UNITS[contract]), (contract, unit)
        assert sum(points(public + hidden, unit) for unit in UNITS) == 50, contract
    assert {c["visibility"] for c in public} == {"visible"}
    assert {c["visibility"] for c in hidden} == {"after_due_date"}
