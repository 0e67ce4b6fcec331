"""The trusted side's handle on a worker: start it, send instructions, enforce deadlines, restart.

Every reply is checked against the protocol schema before anything reads it. When a call runs
past its deadline, exhausts memory or kills the worker, the worker is killed as a whole and the
next test gets a fresh one, so one bad test never costs the others.
"""

from __future__ import annotations

import secrets
import signal
import time
from typing import Any

from pydantic import ValidationError

from ..protocol import (
    MAX_BLOB,
    TENSOR_RESULTS,
    ChannelClosed,
    ChannelTimeout,
    FrameReader,
    ProtocolError,
    Ready,
    Reply,
    Request,
    WorkerErrorInfo,
    check_reply,
    decode,
    encode,
    first_error,
    printable,
    write_frame,
)
from ..sandbox import Backend, OutputCapture, WorkerProcess
from ..submission import Chunk
from .transcript import Transcript
from .transcript import key as transcript_key


class WorkerFailure(Exception):
    """The worker could not answer; `status` is the report status this maps to."""

    status = "crashed"


class WorkerTimeout(WorkerFailure):
    status = "timeout"


class WorkerOOM(WorkerFailure):
    status = "oom"


class WorkerCrashed(WorkerFailure):
    status = "crashed"


class StudentError(Exception):
    """The student's code raised inside the worker; the worker itself is fine."""

    def __init__(self, info: WorkerErrorInfo, label: str):
        super().__init__(info.message)
        self.info = info
        self.label = label

    def student_message(self) -> str:
        """One line a student can act on: what raised, what it said, and where in their code."""
        info = self.info
        if info.kind == "missing":
            return f"{info.message}."
        if info.kind == "export":
            text = (f"{self.label} runs, but {info.message}; there, use tensor operations only (no .item(), "
                    "float(), .tolist(), .numpy() or a Python `if` on a tensor's value)")  # fmt: skip
        elif info.kind == "not_implemented":
            text = f"{self.label} is not implemented yet (it raises NotImplementedError"
            text += f": {info.message})" if info.message else ")"
        else:
            text = f"{self.label} raised {info.type}: {info.message}"
        return f"{text} [at {info.where}]" if info.where else text


def violation(when: str, exc: ProtocolError | ValidationError) -> str:
    """What a worker that broke the protocol did, for the report: the frame's content is the student's."""
    detail = first_error(exc) if isinstance(exc, ValidationError) else printable(str(exc), 300)
    return (
        f"the worker broke the grader's protocol {when}: {detail} (something in your code wrote to the "
        "grader's channel or changed the worker)"
    )


def describe_exit(code: int | None) -> str:
    if code is None:
        return "the worker stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the worker was killed by {name}"
    return f"the worker exited with code {code} (your code ended the process)"


class WorkerSession:
    """One submission's worker, restarted on demand after a kill."""

    def __init__(
        self,
        backend: Backend | None,
        program: list[Chunk],
        startup_timeout: float = 30.0,
        max_starts: int = 8,
        transcript: Transcript | None = None,
    ):
        self.backend = backend  # None: nothing is started (a replay)
        self.transcript = transcript  # where every outcome is recorded, for a later replay
        self.keyed = transcript is not None  # instructions get a transcript key
        self.program = [{"where": c.where, "source": c.source} for c in program]
        self.startup_timeout = startup_timeout
        self.max_starts = max_starts
        self.output = OutputCapture()
        self.proc: WorkerProcess | None = None
        self.reader: FrameReader | None = None
        self.ready: Ready | None = None
        self.starts = 0
        self.dead: WorkerFailure | None = None  # set when loading itself fails: no more restarts
        self.next_id = 0
        self.events: list[str] = []
        self.loaded = False
        self.load_deadline = 0.0
        self.forbidden_seen: dict[str, set[str]] = {}  # request label -> forbidden APIs it ran
        self.nonce = secrets.token_hex(16)  # frames that lack it were forged by student code
        self.forged = 0

    # ------------------------------------------------------------ lifecycle

    def spawn(self) -> None:
        """Start a worker and hand it the program; its slow torch import overlaps our own work."""
        if self.proc is not None or self.dead is not None:
            return
        if self.starts >= self.max_starts:
            self.dead = self.fail(WorkerCrashed(f"gave up after {self.starts} worker starts"))
            return
        self.starts += 1
        assert self.backend is not None
        self.proc = self.backend.spawn(self.output)
        self.reader = FrameReader(self.proc.recv_fd)
        self.loaded = False
        self.load_deadline = time.monotonic() + self.startup_timeout
        try:
            write_frame(
                self.proc.send_fd,
                {"program": self.program, "threads": self.backend.limits.threads, "nonce": self.nonce},
            )
        except BrokenPipeError:
            pass  # reported by ensure() as a crash while loading

    def ensure(self) -> Ready:
        """A loaded, answering worker, or the failure that makes one impossible."""
        if self.proc is not None and not self.proc.alive():
            self.stop()
        self.spawn()
        if self.dead is not None:
            raise type(self.dead)(str(self.dead))
        assert self.proc is not None and self.reader is not None
        if self.loaded and self.ready is not None:
            return self.ready
        try:
            header, tensors = self.reader.read(self.load_deadline, lambda head, size: self.admit(head, size, None, 0))
            self.ready = Ready.model_validate(decode(header, tensors), strict=True)
            self.loaded = True
            if self.transcript is not None:
                self.transcript.ready = self.ready.model_dump()
            return self.ready
        except ChannelTimeout:
            self.dead = WorkerTimeout(f"loading your code took longer than {self.startup_timeout:.0f} s")
        except ChannelClosed:
            code = self.proc.exit_code(grace=1.0)
            if self.proc.oom_killed():
                self.dead = WorkerOOM("your code ran out of memory while it was being loaded")
            else:
                self.dead = WorkerCrashed(f"{describe_exit(code)} while your code was being loaded")
        except (ProtocolError, ValidationError) as exc:
            self.dead = WorkerCrashed(violation("while your code was being loaded", exc))
        if self.transcript is not None:
            self.transcript.ready = {"failure": self.dead.status, "message": str(self.dead)}
        self.fail(self.dead)
        self.stop()
        raise self.dead

    def stop(self) -> int | None:
        code = None
        if self.proc is not None:
            code = self.proc.kill()
        self.proc = None
        self.reader = None
        return code

    # ------------------------------------------------------------ calls

    def request(
        self, op: str, target: Any = None, *, timeout: float, limit: float, label: str = "", **fields: Any
    ) -> Reply:
        """Send one instruction and wait up to `timeout` s for its reply; StudentError if the student's code raised.

        `limit` is the budget named in a timeout message. It is the test's fixed limit, not the time
        left, so that a regrade words a timeout exactly as the first grade did.
        """
        self.ensure()
        self.next_id += 1
        req = Request(id=self.next_id, op=op, target=target, **fields)  # type: ignore[arg-type]
        where = transcript_key(op, target, fields) if self.keyed else ""
        try:
            reply = self.exchange(req, timeout, limit, label, where)
        except WorkerFailure as exc:
            if self.transcript is not None:
                self.transcript.add(where, {"failure": exc.status, "message": str(exc)})
            raise
        if self.transcript is not None:
            self.transcript.add(where, {"reply": reply.model_dump()})
        if reply.forbidden:
            self.forbidden_seen.setdefault(label or op, set()).update(reply.forbidden)
        if reply.error is not None:
            if reply.error.kind == "oom":
                self.stop()  # the heap may be in a bad state: start clean for the next test
                raise self.fail(WorkerOOM(f"your code ran out of memory: {reply.error.message[:300]}"))
            raise StudentError(reply.error, label or op)
        return reply

    def exchange(self, req: Request, timeout: float, limit: float, label: str, where: str) -> Reply:
        """Send the instruction to the worker and read its checked reply; WorkerFailure when there is none.
        `where`: the instruction's transcript key, where instructions are keyed."""
        op = req.op
        assert self.proc is not None and self.reader is not None
        header, tensors = encode(req.model_dump())
        deadline = time.monotonic() + max(timeout, 0.01)
        limit_blob = MAX_BLOB if op in TENSOR_RESULTS else 0
        try:
            write_frame(self.proc.send_fd, header, tensors)
            raw_header, raw_tensors = self.reader.read(
                deadline, lambda head, size: self.admit(head, size, req.id, limit_blob)
            )
            reply = check_reply(decode(raw_header, raw_tensors), op)
        except ChannelTimeout:
            self.stop()
            raise self.fail(
                WorkerTimeout(f"{label or op} did not finish within the test's {limit:g} s limit")
            ) from None
        except (ChannelClosed, BrokenPipeError):
            code = self.proc.exit_code(grace=1.0)
            observed = self.proc.oom_killed()
            oom = observed if observed is not None else code == -signal.SIGKILL
            self.stop()
            cls = WorkerOOM if oom else WorkerCrashed
            text = f"{describe_exit(code)} during {label or op}"
            if oom:
                text += " (most likely for exceeding its memory limit)"
            raise self.fail(cls(text)) from None
        except (ProtocolError, ValidationError) as exc:
            self.stop()
            raise self.fail(WorkerCrashed(violation(f"during {label or op}", exc))) from None
        return reply

    def admit(self, header: dict[str, Any], size: int, request_id: int | None, limit: int) -> bool:
        """Decide on a frame before its tensor payload is read: skip a forgery without the nonce; refuse
        (ProtocolError) a reply to anything but `request_id` (None: the Ready message) or a payload over `limit`."""
        if not self.genuine(header):
            return False
        sent_id = header.get("id")
        if request_id is not None and (type(sent_id) is not int or sent_id != request_id):
            raise ProtocolError(
                f"a reply to request {printable(repr(sent_id), 40)} arrived while request {request_id} was running"
            )
        if size > limit:
            raise ProtocolError(f"a tensor payload of {size} bytes where this reply may carry {limit}")
        return True

    def genuine(self, header: dict[str, Any]) -> bool:
        """Frames without the session nonce come from student code writing to the channel."""
        if header.get("nonce") == self.nonce:
            return True
        self.forged += 1
        if self.forged == 1:
            self.events.append(
                "forbidden access: your code wrote forged messages to the grader's channel; they were ignored"
            )
        return False

    def fail(self, exc: WorkerFailure) -> WorkerFailure:
        self.events.append(str(exc))
        return exc


def failure(outcome: dict[str, Any]) -> WorkerFailure:
    """A recorded failure ({"failure": status, "message": ...}) as the exception it was."""
    cls = {"timeout": WorkerTimeout, "oom": WorkerOOM}.get(str(outcome["failure"]), WorkerCrashed)
    return cls(str(outcome["message"]))


class NotRecorded(WorkerFailure):
    """A replay met an instruction that the recorded grade never gave."""

    status = "error"


class ReplaySession(WorkerSession):
    """A worker session answered from a transcript: no student code runs. What the transcript holds
    was checked when it was recorded and is checked again here, as any worker's reply."""

    def __init__(self, transcript: Transcript):
        super().__init__(None, [])
        self.replay = transcript
        self.keyed = True

    def spawn(self) -> None:
        pass

    def stop(self) -> int | None:
        return None

    def ensure(self) -> Ready:
        recorded = self.replay.ready or {"failure": "crashed", "message": "the recorded grade never loaded this code"}
        if "failure" in recorded:
            raise failure(recorded)
        if self.ready is None:
            self.ready = Ready.model_validate({**recorded, "nonce": self.nonce}, strict=True)
        return self.ready

    def exchange(self, req: Request, timeout: float, limit: float, label: str, where: str) -> Reply:
        outcome = self.replay.next(where)
        if outcome is None:
            raise self.fail(NotRecorded(
                f"{label or req.op}: this check needs your code to run again (a replay answers only what the "
                "recorded grade asked your code); an instructor's regrade without --replay runs it"
            ))  # fmt: skip
        if "failure" in outcome:
            raise self.fail(failure(outcome))
        try:
            return check_reply({**outcome["reply"], "nonce": self.nonce, "id": req.id}, req.op)
        except ValidationError as exc:
            raise self.fail(WorkerCrashed(violation(f"in the transcript of {label or req.op}", exc))) from None
