"""Hostile submissions under the default sandbox: each gets what its code earns, leaves no
trace, never sees hidden material, and the report names what it tried."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.conftest import ROOT, failures, grade, grade_all, unit_scores, vitgrade
from tests.corpus.hostile import ATTACKS, IMPORT_AT, MONKEYPATCH, NAN_FLOOD, QUOTA_FILLER, TARGET_TEST, THIEF
from tests.corpus.mutants import MUTANTS
from vitgrade.sandbox import Limits, local_probe, user_usable

REASON = local_probe()
if REASON and os.environ.get("VITGRADE_REQUIRE_SANDBOX"):
    raise RuntimeError(f"VITGRADE_REQUIRE_SANDBOX is set but the local sandbox does not work: {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no local sandbox here: {REASON}")

SENTINELS = ("HIDDEN-7c41e9d2", "REFERENCE-5be08f13")
DAEMON_SECONDS = "86123"
STARTUP_S, TEST_TIMEOUT_S, SLACK_S = 30, 20, 20


class Listener:
    """A TCP server on 127.0.0.1 that counts the connections it gets."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.server.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.server.accept()
                self.accepted += 1
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.server.close()


def scratch_dirs() -> set[str]:
    return {p.name for p in Path("/tmp").glob("vitgrade-*")}


CGROUPS = Path("/sys/fs/cgroup")


def cgroup_names() -> set[str]:
    """The workers' cgroups on this host (any grade's)."""
    return {p.name for controller in ("memory", "pids") for p in (CGROUPS / controller).glob("vitgrade-*")}


def running(pid: int) -> bool:
    """Whether PID is a process that has not exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("hostile")
    cwd = folder / "grader-cwd"
    cwd.mkdir()
    listener = Listener()
    values = {
        "daemon_seconds": DAEMON_SECONDS,
        "grader_cwd": str(cwd),
        "course_root": str(ROOT),
        "port": str(listener.port),
    }
    jobs = {}
    for attack in ATTACKS:
        path = folder / f"{attack.name}.py"
        path.write_text(attack.source(**values))
        jobs[attack.name] = (path, ())
    bug = next(m for m in MUTANTS if m.name == "missing_scale")
    honest = folder / "missing_scale.py"
    honest.write_text(bug.source())
    patched = folder / "missing_scale_patched.py"
    patched.write_text(
        bug.source().replace(
            IMPORT_AT, IMPORT_AT + "".join(f"    {line}\n" for line in MONKEYPATCH.strip().splitlines()), 1
        )
    )
    nan = folder / "nan_flood.py"
    nan.write_text(bug.source().replace("return attention @ v, attention", NAN_FLOOD))
    jobs |= {"honest_bug": (honest, ()), "patched_bug": (patched, ()), "nan_flood": (nan, ())}
    before = scratch_dirs(), cgroup_names()
    reports = grade_all(jobs, folder / "reports", cwd=cwd)
    listener.close()
    yield reports, cwd, listener, before


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_gets_what_its_code_earns(attacked, attack) -> None:
    reports = attacked[0]
    report = reports[attack.name]
    assert report["status"] == "ok"
    assert report["environment"]["isolation"]["backend"] == "local"
    budget = STARTUP_S + TEST_TIMEOUT_S * len(report["tests"]) + SLACK_S
    assert report["duration_s"] < budget
    if attack.score is not None:
        assert report["score"] == attack.score, failures(report)
    assert report["score"] <= 18
    if attack.status and attack.where == "import":
        assert {t["status"] for t in report["tests"]} == {attack.status}, failures(report)
    elif attack.status:
        target = next(t for t in report["tests"] if t["name"] == TARGET_TEST)
        assert target["status"] == attack.status, target
        assert all(t["status"] == "passed" for t in report["tests"] if t is not target), failures(report)


def test_reports_name_the_attack_class(attacked) -> None:
    reports = attacked[0]

    def target(name: str) -> str:
        return next(t for t in reports[name]["tests"] if t["name"] == TARGET_TEST)["output"]

    assert "did not finish within" in target("forward_hang")
    assert "memory" in target("memory_bomb")
    assert "SIGSEGV" in target("segfault")
    assert "File too large" in target("disk_filler")
    assert "memory" in target("memory_creep")
    assert "sys.exit(3)" in target("sys_exit_in_forward")
    assert "a program may hold in one tensor" in target("huge_output")
    assert "a program may hold in one tensor" in target("program_bomb")
    assert "exited with code 0" in reports["exit_at_import"]["tests"][0]["output"]
    assert "loading your code took longer than" in reports["import_hang"]["tests"][0]["output"]
    flood = reports["stdout_flood"]["student_output"]
    assert flood["truncated"] and flood["total_bytes"] > 64 << 10 and len(flood["text"]) <= 64 << 10
    notes = " ".join(d["reason"] for d in reports["forged_channel"]["diagnostics"])
    assert "forged messages" in notes


def test_no_hidden_text_reaches_any_report(attacked) -> None:
    reports = attacked[0]
    for name, report in reports.items():
        text = json.dumps(report)
        for sentinel in SENTINELS:
            assert sentinel not in text, f"{name} leaked {sentinel}"
    printed = reports["read_hidden_files"]["student_output"]["text"]
    assert "HW4" not in printed or "test_cases" not in printed


def test_forged_output_and_files_change_nothing(attacked) -> None:
    reports, cwd = attacked[0], attacked[1]
    assert reports["fake_report"]["score"] == 18 and '"score": 50' in reports["fake_report"]["student_output"]["text"]
    for path in (cwd / "results.json", cwd.parent / "results.json", ROOT / "results.json", Path("/tmp/results.json")):
        assert not path.exists(), f"{path} was written"
    assert not Path("/autograder/results/results.json").exists()


def test_no_network(attacked) -> None:
    reports, _, listener, _ = attacked
    assert listener.accepted == 0
    assert reports["network"]["environment"]["isolation"]["network"].startswith("none")
    assert "CONNECTED" not in reports["network"]["student_output"]["text"]


def test_monkeypatching_the_checker_changes_nothing(attacked) -> None:
    reports = attacked[0]
    assert reports["patched_bug"]["score"] == reports["honest_bug"]["score"] < 18
    assert unit_scores(reports["nan_flood"])["sdpa"][0] <= 1  # only the shape check can pass
    assert any("nan" in t["output"] or "inf" in t["output"] for t in reports["nan_flood"]["tests"])


def test_nothing_survives_grading(attacked) -> None:
    dirs, groups = attacked[3]
    processes = subprocess.run(["ps", "-eo", "uid,args"], capture_output=True, text=True).stdout
    assert DAEMON_SECONDS not in processes
    assert not [line for line in processes.splitlines()[1:] if line.split()[0] == "65534"]
    assert scratch_dirs() <= dirs, "a grading temp dir was left behind"
    assert cgroup_names() <= groups, "a worker's cgroup was left behind"


HANG_AND_FORK = """
import os, time


class PatchEmbedding:  # a class body runs when the worker loads the code
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
    time.sleep(600)
"""


def test_groups_a_killed_grade_left_are_swept(tmp_path: Path) -> None:
    """A grader killed outright (SIGKILL, a lost session) cannot remove its worker's cgroups, and
    under `user` what the worker forked outlives it (the worker itself dies with its parent): the
    next grade finds the groups' owner dead, kills what is still in them and removes them."""
    need_backend("user")
    from vitgrade.sandbox import cgroups

    if os.geteuid() != 0 or not cgroups.available():
        pytest.skip("no writable cgroup v1 here")
    hang = tmp_path / "hang.py"
    hang.write_text(HANG_AND_FORK)
    argv = [sys.executable, "-m", "vitgrade", "grade", str(hang), "--backend", "user", "--json", str(tmp_path / "r.json")]
    grader = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "VITGRADE_COURSE": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline, left = time.monotonic() + 60, []
        while not left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = [p for p in (CGROUPS / "pids").glob(f"vitgrade-{cgroups.namespace()}-{grader.pid}-*") if len((p / "cgroup.procs").read_text().split()) > 1]
        assert left, "the grade never started a worker in a cgroup of its own"
    finally:
        grader.kill()
        grader.wait()
    time.sleep(0.5)  # the worker's parent-death signal
    workers = [int(p) for p in (left[0] / "cgroup.procs").read_text().split()]
    assert any(running(p) for p in workers), "nothing outlived the grader: this test would prove nothing"
    assert left[0].name in cgroup_names()
    quick = tmp_path / "quick.py"
    quick.write_text("x = 1\n")
    grade(quick, tmp_path / "q.json", "--backend", "local")
    assert left[0].name not in cgroup_names(), "the dead grade's cgroup is still there"
    assert not any(running(p) for p in workers), "the dead grade's worker still runs"


def zip_bomb(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("hw4_impl.ipynb", "w", force_zip64=True) as member:
            block = b"\0" * (1 << 24)
            for _ in range(40):  # 640 MiB of zeros, a few MiB compressed
                member.write(block)
    return path


def many_entries(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(300):
            archive.writestr(f"f{i}.txt", "x")
    return path


def giant_cell(path: Path) -> Path:
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1\n#" + "a" * (2 << 20)), new_code_cell("y = 2")]), path)
    return path


def oversize(path: Path) -> Path:
    path = path.with_suffix(".ipynb")
    path.write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5, "pad": "a" * (21 << 20)})
    )
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (zip_bomb, "unpacks to more than"),
        (many_entries, "entries, over the limit"),
        (oversize, "over the limit of"),
        (lambda p: (p.with_suffix(".ipynb").write_bytes(os.urandom(4096)), p.with_suffix(".ipynb"))[1], "not UTF-8"),
        (
            lambda p: (p.with_suffix(".ipynb").write_text("[1, 2"), p.with_suffix(".ipynb"))[1],
            "not a readable Jupyter notebook",
        ),
    ],
    ids=["zip_bomb", "zip_entries", "oversize_notebook", "binary_ipynb", "invalid_json"],
)
def test_bad_input_gets_an_error_report(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path / "bad.zip")
    done = vitgrade("grade", str(path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "error" and reason in report["error"] and "\n" not in report["error"]


def test_giant_cell_is_skipped_and_the_rest_graded(tmp_path: Path) -> None:
    report = grade(giant_cell(tmp_path / "giant.ipynb"), tmp_path / "r.json")
    assert report["status"] == "ok"
    assert any(d["where"] == "cell 1" and "larger than" in d["reason"] for d in report["diagnostics"])


class LowestFreeSpace:
    """Samples, every 10 ms, the free space of the filesystem holding the grader's temp folders."""

    def __init__(self) -> None:
        self.start = self.lowest = self.free()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    @staticmethod
    def free() -> int:
        return shutil.disk_usage(tempfile.gettempdir()).free

    def run(self) -> None:
        while not self.stop.wait(0.01):
            self.lowest = min(self.lowest, self.free())

    def __enter__(self) -> LowestFreeSpace:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def need_backend(backend: str) -> None:
    """Skip a `user` test where root cannot drop to nobody (never under VITGRADE_REQUIRE_SANDBOX)."""
    reason = user_usable() if backend == "user" else None
    if reason and os.environ.get("VITGRADE_REQUIRE_SANDBOX"):
        raise RuntimeError(f"VITGRADE_REQUIRE_SANDBOX is set but the user backend does not work: {reason}")
    if reason:
        pytest.skip(f"no user backend here: {reason}")


QUOTA = Limits().scratch
WATCH_SLACK = 64 << 20  # what a fast disk takes between two polls of the user/process watchdog


@pytest.mark.parametrize("backend", ["local", "user", "process"])
def test_disk_quota_bounds_what_a_worker_writes(tmp_path: Path, backend: str) -> None:
    """Files each under RLIMIT_FSIZE, written until something stops them: the quota holds the total
    (tmpfs under local; a tmpfs where root may mount, and a watchdog, under user and process)."""
    need_backend(backend)
    sub = tmp_path / "filler.py"
    sub.write_text(QUOTA_FILLER.source(tmp="." if backend == "process" else "/tmp"))
    with LowestFreeSpace() as space:
        report = grade(sub, tmp_path / "r.json", "--backend", backend)
    assert report["status"] == "ok" and report["environment"]["isolation"]["backend"] == backend
    assert report["score"] == QUOTA_FILLER.score, failures(report)
    target = next(t for t in report["tests"] if t["name"] == TARGET_TEST)
    printed = report["student_output"]["text"]
    written = max(int(n) for n in re.findall(r"WRITTEN (\d+)", printed))
    if "No space left on device" in target["output"]:  # a tmpfs: exact
        assert written <= QUOTA
    else:  # the watchdog: within one poll
        assert backend != "local", target
        assert target["status"] in {"crashed", "oom"} and "over the 256 MiB a worker may use" in printed, target
        assert written <= QUOTA + WATCH_SLACK
    assert written >= QUOTA // 2 - (8 << 20), "the filler stopped before it reached the quota"
    assert space.start - space.lowest < QUOTA + (512 << 20), "the host disk took more than the quota"
    assert not list(Path("/tmp").glob("fill*.bin")), "the filler's files were left in /tmp"


def modes(root: Path) -> dict[str, int]:
    """The mode of every path in the checkout (links not followed)."""
    found = {}
    for folder, subdirs, files in os.walk(root):
        for name in [*subdirs, *files]:
            path = os.path.join(folder, name)
            try:
                found[path] = os.lstat(path).st_mode
            except FileNotFoundError:
                pass
    return found | {str(root): root.lstat().st_mode}


def changed_modes(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Paths whose mode differs (paths other people's work added or removed meanwhile are ignored)."""
    return [f"{p}: {oct(before[p])} -> {oct(after[p])}" for p in before.keys() & after.keys() if before[p] != after[p]]


@pytest.fixture
def planted() -> tuple[str, Path]:
    """A loose git object holding a fresh sentinel, removed afterwards."""
    if not (ROOT / ".git").is_dir():
        pytest.skip("not a git checkout")
    token = f"thief-sentinel {uuid.uuid4()}"
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as source:
        source.write(token + "\n")
        source.flush()
        digest = subprocess.run(
            ["git", "hash-object", "-w", source.name], cwd=ROOT, capture_output=True, text=True, check=True
        )
    path = ROOT / ".git" / "objects" / digest.stdout.strip()[:2] / digest.stdout.strip()[2:]
    assert path.is_file()
    yield token, path
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass  # other objects live there too


# Where the thief walks, beyond the checkout: the places a view built for the worker could hide things
# (the host's whole tree, under user and process, is too large to read in the loading time).
THIEF_ROOTS = {
    "local": ["/tmp", "/home", "/opt"],
    "docker": ["/opt", "/home", "/tmp", "/root", "/srv", "/etc", "/autograder"],
}


def thief(folder: Path, backend: str, planted: tuple[str, Path]) -> Path:
    """The thief submission for a backend, aimed at the checkout, guessed paths and the planted object."""
    if backend == "process":  # the control walks only where the sentinels lie: the whole checkout
        roots = [str(ROOT / "reference"), str(ROOT / "test_cases")]  # (venv, CI's docker data) takes > 30 s
    else:
        roots = [str(ROOT), *THIEF_ROOTS.get(backend, [])]
    guesses = [
        str(ROOT / p) for p in (".git/HEAD", "reference/vit.py", "test_cases/hidden/suite.toml", "tests/conftest.py")
    ]
    sub = folder / "thief.py"
    sub.write_text(THIEF.source(roots=repr(roots), guesses=repr([*guesses, str(planted[1])])))
    return sub


@pytest.mark.parametrize("backend", ["local", "user"])
def test_no_byte_of_the_checkout_reaches_the_worker(tmp_path: Path, planted: tuple[str, Path], backend: str) -> None:
    """A submission that reads every file it can list or guess in the checkout, .git's objects
    decompressed, finds nothing; the checkout's modes are exactly as before."""
    need_backend(backend)
    before = modes(ROOT)
    report = grade(thief(tmp_path, backend, planted), tmp_path / "r.json", "--backend", backend)
    assert report["score"] == THIEF.score, failures(report)
    printed = report["student_output"]["text"]
    assert "THIEF READ" in printed, printed[-2000:]
    text = json.dumps(report)
    for sentinel in (planted[0].split()[1], *SENTINELS):
        assert sentinel not in text, f"{sentinel} leaked: {printed[-2000:]}"
    assert not changed_modes(before, modes(ROOT))


def test_thief_finds_the_sentinels_where_nothing_hides_them(tmp_path: Path, planted: tuple[str, Path]) -> None:
    """The control: under the `process` backend (no isolation by design) the same thief finds them all."""
    report = grade(thief(tmp_path, "process", planted), tmp_path / "r.json", "--backend", "process")
    assert report["score"] == THIEF.score, failures(report)
    printed = report["student_output"]["text"]
    assert planted[0] in printed and "REFERENCE-5be08f13" in printed and "HIDDEN-7c41e9d2" in printed, printed[-2000:]


HOLD = """
import os, sys
from pathlib import Path
from vitgrade.sandbox.hiding import Hidden
Hidden([Path(sys.argv[1]) / "secret"], keep=[sys.argv[1] + "/venv"])
os._exit(0)  # dies holding the protection, as a killed grader would
"""


def test_modes_come_back_after_a_grader_died_holding_them(tmp_path: Path) -> None:
    """A grade that dies without restoring leaves a journal; the next grade restores it first, and
    the last holder leaves exactly the original modes."""
    root = tmp_path / "course"
    for folder, mode in (("", 0o755), (".git", 0o755), ("secret", 0o750), ("venv", 0o755), ("venv/bin", 0o705)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder).chmod(mode)
    (root / "README").write_text("x")
    (root / "README").chmod(0o664)
    before = modes(root)
    subprocess.run([sys.executable, "-c", HOLD, str(root)], check=True, cwd=ROOT)
    assert root.stat().st_mode & 0o777 == 0o711 and (root / "secret").stat().st_mode & 0o777 == 0o700
    assert (root / "venv" / "bin").stat().st_mode & 0o777 == 0o705, "the way to the interpreter stays open"
    from vitgrade.sandbox.hiding import Hidden

    again = Hidden([root / "secret"], keep=[str(root / "venv")])
    try:
        assert (root / "README").stat().st_mode & 0o777 == 0o600
    finally:
        again.release()  # no journal left behind, even when the assertion fails
    assert not changed_modes(before, modes(root))
