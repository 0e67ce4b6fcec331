"""Forged worker replies: the reference, with code in the ViT's forward pass (the public test that
feeds it a batch of 4 images) that finds the worker's nonce and request id in a stack frame and
writes its own frame to the grader's channel. Each must cost the student that one test, as a
crash that names the protocol, and nothing else."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from tests.corpus.hostile import FORWARD_AT
from tests.corpus.mutants import REFERENCE

FORGE = '''
import os as _os, sys as _sys
_frame = _sys._getframe()
while type(_frame.f_locals.get("self")).__name__ != "Worker" or "req" not in _frame.f_locals:
    _frame = _frame.f_back
_worker, _req = _frame.f_locals["self"], _frame.f_locals["req"]


def _forge(head, blob=0):
    """Write a frame: this header (@NONCE@ and @ID@ filled in) and `blob` zero bytes of payload."""
    head = head.replace("@NONCE@", _worker.nonce).replace("@ID@", str(_req.id)).encode()
    _os.write(_worker.chan_out, b"VGW1" + len(head).to_bytes(4, "big") + blob.to_bytes(8, "big") + head)
    for _ in range(blob >> 20):
        _os.write(_worker.chan_out, bytes(1 << 20))
'''
REPLY = '{"nonce":"@NONCE@","id":@ID@,"ok":true,'


@dataclass(frozen=True)
class Forgery:
    name: str
    calls: str  # the _forge(...) calls, as Python source
    message: str  # what the target test's message must say about it

    def source(self) -> str:
        code = "if x.shape[0] == 4:\n" + textwrap.indent(FORGE.strip() + "\n" + self.calls.strip(), "    ")
        return REFERENCE.read_text().replace(FORWARD_AT, textwrap.indent(code, "        ") + "\n" + FORWARD_AT, 1)


BIG = 256 << 20  # the largest payload the prefix may announce

FORGERIES = [
    Forgery(
        "deep_nesting",
        f"""_forge('{REPLY}"result":{{"value":' + '[' * 50000 + ']' * 50000 + '}}}}')""",
        "nested too deeply",
    ),
    Forgery(
        "many_containers",
        f"""_forge('{REPLY}"result":{{"value":[' + '[],' * 200000 + '[]]}}}}')""",
        "JSON objects and arrays",
    ),
    Forgery("huge_int", f"""_forge('{REPLY}"result":{{"value":' + '9' * 5000 + '}}}}')""", "digits"),
    Forgery("nan", f"""_forge('{REPLY}"result":{{"value":NaN}}}}')""", "NaN is not allowed"),
    Forgery("infinity", f"""_forge('{REPLY}"result":{{"value":-Infinity}}}}')""", "-Infinity is not allowed"),
    Forgery("overflowing_float", f"""_forge('{REPLY}"result":{{"value":1e400}}}}')""", "out of range"),
    Forgery(
        "wrong_type",
        f"""_forge('{REPLY}"result":{{"graph":{{}},"tensors":5}}}}')""",
        "tensors: Input should be a valid dictionary",
    ),
    Forgery(
        "coerced_bool",
        """_forge('{"nonce":"@NONCE@","id":@ID@,"ok":"yes","result":{"value":1}}')""",
        "ok: Input should be a valid boolean",
    ),
    Forgery("missing_field", f"""_forge('{REPLY}"result":{{"tensors":{{}}}}}}')""", "graph: Field required"),
    Forgery(
        "failure_without_error",
        """_forge('{"nonce":"@NONCE@","id":@ID@,"ok":false}')""",
        "error exactly when it is not ok",
    ),
    # A 256 MiB frame without the nonce (skipped unread), then one with it that answers a request never made.
    Forgery(
        "big_frames",
        f"""_forge('{{"nonce":"guess","id":@ID@,"ok":true}}', {BIG})\n_forge('{{"nonce":"@NONCE@","id":0,"ok":true}}', {BIG})""",
        "a reply to request 0 arrived while request",
    ),
]
