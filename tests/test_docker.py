"""The docker backend against a real engine: the same reports as the local sandbox, and a
worker container with no route out that cannot see the hidden suite."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, failures, grade, grade_all
from tests.corpus.hostile import ATTACKS, IMPORT_AT, QUOTA_FILLER, TARGET_TEST, THIEF
from tests.corpus.mutants import MUTANTS, REFERENCE
from tests.test_hostile import SENTINELS, changed_modes, modes, planted, thief  # noqa: F401 (planted: a fixture)
from vitgrade.sandbox import Limits, local_probe
from vitgrade.sandbox.docker import probe

REASON = probe()
if REASON and os.environ.get("VITGRADE_REQUIRE_DOCKER"):
    raise RuntimeError(f"VITGRADE_REQUIRE_DOCKER is set but the docker backend is unusable: {REASON}")
pytestmark = pytest.mark.skipif(
    REASON is not None or local_probe() is not None, reason=f"no docker engine or image: {REASON}"
)

COMPARED_ATTACKS = ("forward_hang", "memory_bomb", "fork_bomb", "network", "read_hidden_files")
PROBE = """
import os as _os, socket as _socket
print("ROUTES", open("/proc/net/route").read().count("\\n") - 1)
try:
    _socket.create_connection(("192.0.2.1", 80), timeout=2)
    print("REACHED the outside")
except OSError as _exc:
    print("NO ROUTE", _exc.errno)
print("HIDDEN VISIBLE", _os.path.exists({hidden!r}), _os.path.exists("/autograder/source"), _os.path.exists({reference!r}))
print("UID", _os.getuid())
"""


def comparable(report: dict) -> dict:
    """What must agree across backends: scores, statuses and messages of every test."""
    return {
        "score": report["score"],
        "tests": [(t["name"], t["status"], t["score"], t["output"]) for t in report["tests"]],
    }


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("docker")
    values = {"daemon_seconds": "1", "grader_cwd": str(folder), "course_root": str(ROOT), "port": "9"}
    subs = {"solved": folder / "solved.py", "mutant": folder / "mutant.py"}
    subs["solved"].write_text(REFERENCE.read_text())
    subs["mutant"].write_text(next(m for m in MUTANTS if m.name == "mask_inverted").source())
    for attack in (a for a in ATTACKS if a.name in COMPARED_ATTACKS):
        subs[attack.name] = folder / f"{attack.name}.py"
        subs[attack.name].write_text(attack.source(**values))
    subs["quota_filler"] = folder / "quota_filler.py"
    subs["quota_filler"].write_text(QUOTA_FILLER.source(tmp="/tmp"))
    probe_code = PROBE.format(hidden=str(ROOT / "test_cases" / "hidden"), reference=str(ROOT / "reference" / "vit.py"))
    subs["probe"] = folder / "probe.py"
    subs["probe"].write_text(
        REFERENCE.read_text().replace(
            IMPORT_AT, IMPORT_AT + "".join(f"    {line}\n" for line in probe_code.strip().splitlines())
        )
    )
    jobs = {
        f"{name}@{backend}": (path, ("--backend", backend, "--seed", "5"))
        for name, path in subs.items()
        for backend in ("local", "docker")
    }
    return grade_all(jobs, folder / "reports")


@pytest.mark.parametrize("name", ["solved", "mutant", *COMPARED_ATTACKS])
def test_docker_report_matches_local(both: dict[str, dict], name: str) -> None:
    docker, local = both[f"{name}@docker"], both[f"{name}@local"]
    assert docker["environment"]["isolation"]["backend"] == "docker"
    assert comparable(docker) == comparable(local)


def test_worker_container_has_no_route_out_and_no_hidden_suite(both: dict[str, dict]) -> None:
    report = both["probe@docker"]
    printed = report["student_output"]["text"]
    assert report["score"] == 18
    assert "ROUTES 0" in printed and "NO ROUTE" in printed and "REACHED" not in printed
    assert "HIDDEN VISIBLE False False False" in printed
    assert "UID 10001" in printed
    text = json.dumps(report)
    assert "HIDDEN-7c41e9d2" not in text and "REFERENCE-5be08f13" not in text


def test_containers_are_removed(both: dict[str, dict]) -> None:
    import docker

    assert docker.from_env().containers.list(all=True, filters={"label": "vitgrade=worker"}) == []


def test_worker_container_disk_is_bounded_by_the_quota(both: dict[str, dict]) -> None:
    """/tmp and the working directory are tmpfs mounts of half the quota each: writes past it fail."""
    report = both["quota_filler@docker"]
    assert report["score"] == QUOTA_FILLER.score
    target = next(t for t in report["tests"] if t["name"] == TARGET_TEST)
    assert "No space left on device" in target["output"], target
    written = max(int(n) for n in re.findall(r"WRITTEN (\d+)", report["student_output"]["text"]))
    assert Limits().scratch // 2 - (8 << 20) <= written <= Limits().scratch


def test_worker_container_reads_no_byte_of_the_checkout(tmp_path: Path, planted: tuple[str, Path]) -> None:  # noqa: F811
    """The thief of test_hostile in a container: the checkout, the image's likely hiding places and guessed
    paths give it no sentinel (a fresh loose git object included); the checkout's modes are unchanged."""
    before = modes(ROOT)
    report = grade(thief(tmp_path, "docker", planted), tmp_path / "r.json", "--backend", "docker")
    assert report["environment"]["isolation"]["backend"] == "docker"
    assert report["score"] == THIEF.score, failures(report)
    assert "THIEF READ" in report["student_output"]["text"]
    text = json.dumps(report)
    for sentinel in (planted[0].split()[1], *SENTINELS):
        assert sentinel not in text
    assert not changed_modes(before, modes(ROOT))
