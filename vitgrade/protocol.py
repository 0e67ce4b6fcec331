"""The data-only channel between the runner (trusted) and the worker (untrusted).

A frame is a fixed 16-byte prefix (magic, header length, blob length), a JSON header and a
safetensors blob holding every tensor of the message. JSON values refer to tensors as
``{"$t": name}`` and to non-finite floats as ``{"$f": "nan"}``. Nothing here ever unpickles or
evaluates what it reads: JSON and safetensors are plain data, and the trusted side checks sizes,
schema, dtypes and shapes before use.

The worker's replies are untrusted: student code shares the worker's interpreter, so it can find
the nonce and write frames of its own. A frame is therefore bounded before it is read (header
and blob sizes from the prefix, the blob against what the caller admits), parsed strictly (no
huge integers, no NaN or Infinity, bounded nesting and container count) and validated against
the schema of the reply it claims to be.

This module is imported by both sides, so it depends only on the standard library, torch,
safetensors and pydantic. torch is imported on first use, not with the module: the runner
starts its worker (whose own torch import takes seconds) before it pays for torch itself.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

if TYPE_CHECKING:
    import torch

MAGIC = b"VGW1"
PREFIX = struct.Struct(">4sIQ")  # magic, header bytes, blob bytes
MAX_HEADER = 4 << 20  # JSON header cap (4 MiB)
MAX_BLOB = 256 << 20  # tensor payload cap (256 MiB)
MAX_TENSOR_ELEMENTS = 32 << 20
SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "I64": "int64",
                      "I32": "int32", "U8": "uint8", "BOOL": "bool"}  # fmt: skip  # the dtypes a message may carry
MAX_NESTING = 32
MAX_CONTAINERS = 100_000  # JSON objects and arrays in one header: bounds what parsing it can allocate
MAX_INT_DIGITS = 19  # int64 and a little more; Python would parse (and the trusted side compute with) any size
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}



# The attention APIs the homework forbids: the one list, read by the worker's recorders, the reply
# schema and the trusted side's static scan (vitgrade.runner.policy).
ForbiddenApi = Literal[
    "F.scaled_dot_product_attention",
    "F.multi_head_attention_forward",
    "nn.MultiheadAttention",
    "nn.TransformerEncoderLayer",
    "nn.TransformerEncoder",
]
FORBIDDEN_APIS: tuple[ForbiddenApi, ...] = get_args(ForbiddenApi)

class ProtocolError(Exception):
    """The peer sent something that is not a valid frame or message."""


class ChannelTimeout(Exception):
    """No complete frame arrived before the deadline."""


class ChannelClosed(Exception):
    """The peer closed the channel (usually: the worker died)."""


# ---------------------------------------------------------------- encoding values with tensors


def encode(value: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Replace every tensor in a JSON-like value by a reference; return (json_value, tensors).

    Raises TypeError for what the reading side would refuse, so that the worker reports a value it
    cannot send as the student's error instead of breaking the protocol.
    """
    import torch

    tensors: dict[str, torch.Tensor] = {}

    def walk(v: Any, depth: int) -> Any:
        if depth > MAX_NESTING:
            raise TypeError(f"cannot send a value nested more than {MAX_NESTING} levels deep")
        if isinstance(v, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = v.detach().cpu().contiguous().clone()
            return {"$t": name}
        if isinstance(v, dict):
            return {str(key): walk(item, depth + 1) for key, item in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(item, depth + 1) for item in v]
        if isinstance(v, int) and not isinstance(v, bool) and len(str(abs(v))) > MAX_INT_DIGITS:
            raise TypeError(f"cannot send an integer of more than {MAX_INT_DIGITS} digits")
        if isinstance(v, float) and not math.isfinite(v):
            return {"$f": str(v)}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise TypeError(f"cannot send a value of type {type(v).__name__}")

    return walk(value, 0), tensors


def decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of encode: put the tensors and non-finite floats back where the references are."""

    def walk(v: Any, depth: int) -> Any:
        if depth > MAX_NESTING:
            raise ProtocolError("message nested too deeply")
        if isinstance(v, dict):
            if set(v) == {"$t"}:
                try:
                    return tensors[v["$t"]]
                except (KeyError, TypeError):
                    raise ProtocolError(f"reference to a missing tensor {ascii(v['$t'])[:100]}") from None
            if set(v) == {"$f"}:
                try:
                    return NON_FINITE[v["$f"]]
                except (KeyError, TypeError):
                    raise ProtocolError(f"{ascii(v['$f'])[:100]} is not a non-finite float") from None
            return {key: walk(item, depth + 1) for key, item in v.items()}
        if isinstance(v, list):
            return [walk(item, depth + 1) for item in v]
        return v

    return walk(value, 0)


def pack(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bytes:
    head = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    if len(head) > MAX_HEADER:
        raise TypeError(f"cannot send a message of {len(head)} bytes of JSON (limit {MAX_HEADER})")
    blob = b""
    if tensors:
        from safetensors.torch import save

        blob = save(tensors)
    return PREFIX.pack(MAGIC, len(head), len(blob)) + head + blob


def loads(data: bytes) -> Any:
    """Strict JSON: bounded nesting and container count, no NaN or Infinity, no integer over MAX_INT_DIGITS."""
    if data.count(b"[") + data.count(b"{") > MAX_CONTAINERS:  # brackets in strings count too: a safe bound
        raise ProtocolError(f"header holds more than {MAX_CONTAINERS} JSON objects and arrays")
    try:
        return json.loads(data.decode("utf-8"), parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse)
    except RecursionError:
        raise ProtocolError("header nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ProtocolError(f"header is not plain JSON: {str(exc)[:200]}") from None


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (limit {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _refuse(text: str) -> Any:
    raise ValueError(f"{text} is not allowed (non-finite floats travel as {{'$f': ...}})")


def parse_header(head: bytes) -> dict[str, Any]:
    header = loads(head)
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    return header


def parse_blob(blob: bytearray) -> dict[str, torch.Tensor]:
    """A safetensors payload as tensors that view `blob` (no copy), after checking every declared
    dtype, shape and offset against the limits and the payload's actual size."""
    import torch

    if len(blob) < 8:
        raise ProtocolError("tensor payload is shorter than its own length field")
    size = int.from_bytes(blob[:8], "little")
    if size > len(blob) - 8:
        raise ProtocolError("tensor payload header runs past the payload")
    raw = loads(bytes(blob[8 : 8 + size]))
    if isinstance(raw, dict):
        raw.pop("__metadata__", None)
    try:
        index = _SAFETENSORS_INDEX.validate_python(raw, strict=True)
    except ValidationError as exc:
        raise ProtocolError(f"tensor payload header is invalid: {first_error(exc)}") from None
    start, end = 8 + size, 8 + size
    tensors: dict[str, torch.Tensor] = {}
    for name, entry in sorted(index.items(), key=lambda item: item[1].data_offsets):
        dtype = getattr(torch, SAFETENSORS_DTYPES[entry.dtype])
        width = torch.empty((), dtype=dtype).element_size()
        count = math.prod(entry.shape)
        begin, stop = (start + offset for offset in entry.data_offsets)
        if count > MAX_TENSOR_ELEMENTS:
            raise ProtocolError(f"tensor {ascii(name)[:100]} has {count} elements (limit {MAX_TENSOR_ELEMENTS})")
        if begin != end or stop - begin != count * width or begin % width:
            raise ProtocolError(f"tensor {ascii(name)[:100]} does not match its place in the payload")
        view = torch.frombuffer(blob, dtype=dtype, count=count, offset=begin) if count else torch.empty(0, dtype=dtype)
        tensors[name] = view.reshape(entry.shape)
        end = stop
    if end != len(blob):
        raise ProtocolError(f"tensor payload has {len(blob) - end} bytes that belong to no tensor")
    return tensors


# ---------------------------------------------------------------- reading and writing frames


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_frame(fd: int, header: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
    write_all(fd, pack(header, tensors or {}))


Admit = Callable[[dict[str, Any], int], bool]
"""Decides on a frame from its header and blob size, before the blob is read: True to read it,
False to skip it unread, or ProtocolError to refuse it."""


class FrameReader:
    """Reads frames from a file descriptor with a deadline and hard size limits.

    Memory stays bounded by what is admitted: the prefix's sizes are checked before anything else
    is read, a skipped frame's blob is drained in small chunks, and an admitted blob is read once
    into its own buffer, which its tensors then view.
    """

    def __init__(self, fd: int, max_header: int = MAX_HEADER, max_blob: int = MAX_BLOB):
        self.fd = fd
        self.max_header = max_header
        self.max_blob = max_blob
        self.buffer = bytearray()

    def _wait(self, deadline: float | None) -> None:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self.fd], [], [], wait)
        if not ready:
            raise ChannelTimeout()

    def _fill(self, size: int, deadline: float | None) -> None:
        while len(self.buffer) < size:
            self._wait(deadline)
            chunk = os.read(self.fd, max(65536, size - len(self.buffer)))
            if not chunk:
                raise ChannelClosed()
            self.buffer += chunk

    def _take(self, size: int, deadline: float | None) -> bytearray:
        """The next `size` bytes, read straight into one buffer of that size."""
        out = bytearray(size)
        view = memoryview(out)
        done = min(size, len(self.buffer))
        view[:done] = self.buffer[:done]
        del self.buffer[:done]
        while done < size:
            self._wait(deadline)
            got = os.readv(self.fd, [view[done:]])
            if not got:
                raise ChannelClosed()
            done += got
        return out

    def _skip(self, size: int, deadline: float | None) -> None:
        dropped = min(size, len(self.buffer))
        del self.buffer[:dropped]
        while dropped < size:
            self._wait(deadline)
            chunk = os.read(self.fd, min(size - dropped, 1 << 20))
            if not chunk:
                raise ChannelClosed()
            dropped += len(chunk)

    def read(
        self, deadline: float | None = None, admit: Admit | None = None
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The next frame that `admit` accepts (every frame without it); frames it declines are skipped."""
        while True:
            self._fill(PREFIX.size, deadline)
            magic, head_len, blob_len = PREFIX.unpack_from(self.buffer)
            if magic != MAGIC:
                raise ProtocolError("bad frame magic")
            if head_len > self.max_header:
                raise ProtocolError(f"header of {head_len} bytes exceeds the limit of {self.max_header}")
            if blob_len > self.max_blob:
                raise ProtocolError(f"tensor payload of {blob_len} bytes exceeds the limit of {self.max_blob}")
            self._fill(PREFIX.size + head_len, deadline)
            head = bytes(self.buffer[PREFIX.size : PREFIX.size + head_len])
            del self.buffer[: PREFIX.size + head_len]
            header = parse_header(head)
            if admit is not None and not admit(header, blob_len):
                self._skip(blob_len, deadline)
                continue
            return header, parse_blob(self._take(blob_len, deadline)) if blob_len else {}


# ---------------------------------------------------------------- message schemas


def printable(text: str, limit: int = 200) -> str:
    """Untrusted text made safe to log and report: lone surrogates escaped, length capped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]


def first_error(exc: ValidationError) -> str:
    """The first problem pydantic found, without the offending (untrusted, maybe huge) input."""
    error = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    loc = error["loc"][:-2] if error["loc"][-1:] == ("[key]",) else error["loc"]  # a bad key: the message names it
    where = ".".join(str(part) for part in loc)
    message = error["msg"].removeprefix("Value error, ")
    return printable(f"{where}: {message}" if where else message, 300)


def module_path(name: Any) -> Any:
    """Names of parameters, buffers and submodules: non-empty printable parts joined by dots, as torch
    makes them (ModuleDict keys such as "conv-1" included). Anything else, a lone surrogate or a
    newline say, could not be written into a report or a log line."""
    parts = name.split(".") if isinstance(name, str) else []  # not a string: left to the str validation
    if not all(part and part.isprintable() for part in parts):
        raise ValueError(
            f"{printable(ascii(name))} is not a usable name (printable parts joined by dots): name it like a Python variable"
        )
    return name


def _tensor(value: Any) -> Any:
    import torch

    if not isinstance(value, torch.Tensor):
        raise ValueError(f"expected a tensor, got {type(value).__name__}")
    return value


Name = Annotated[str, BeforeValidator(module_path), Field(max_length=1000)]
Tensor = Annotated[Any, AfterValidator(_tensor)]
Count = Annotated[int, Field(ge=0, le=MAX_TENSOR_ELEMENTS)]
Shape = Annotated[list[Count], Field(max_length=32)]


class _TensorEntry(BaseModel):
    """One tensor in a safetensors header."""

    model_config = ConfigDict(extra="forbid")
    dtype: Literal["F16", "BF16", "F32", "F64", "I64", "I32", "U8", "BOOL"]
    shape: Shape
    data_offsets: Annotated[list[Annotated[int, Field(ge=0, le=MAX_BLOB)]], Field(min_length=2, max_length=2)]


_SAFETENSORS_INDEX = TypeAdapter(dict[str, _TensorEntry])


Op = Literal[
    "call",  # call a top-level function of the submission
    "build",  # instantiate a class of the submission -> handle
    "forward",  # call a built module (optionally backward with a given gradient)
    "params",  # parameter names/shapes and the module tree of a handle
    "get_state",  # a handle's state_dict as tensors
    "set_state",  # load a state_dict into a handle
    "mode",  # train() / eval()
    "value",  # a literal top-level value of the submission (a hyper-parameter)
    "train",  # the grader's own training loop, in the worker (only for code run unverified)
    "load_checkpoint",  # load a state_dict from checkpoint bytes, weights-only
    "free",  # drop a handle
    "export",  # capture a handle's forward, or a function, for given inputs as a program (vitgrade.program)
]


class Request(BaseModel):
    """An instruction to the worker: never code, only a name and inputs."""

    model_config = ConfigDict(extra="forbid")
    id: int
    op: Op
    target: str | int | None = None  # a function/class name, or a handle
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    grad_inputs: list[int] = Field(default_factory=list)  # which args need gradients
    grad_output: Any = None  # if set: backward(grad_output) after the call
    training: bool | None = None  # export: the module's mode while it is captured


ErrorKind = Literal["exception", "not_implemented", "oom", "missing", "bad_request", "export"]


class WorkerErrorInfo(BaseModel):
    """What went wrong inside the worker, described by the worker (untrusted text, capped)."""

    model_config = ConfigDict(extra="forbid")
    kind: ErrorKind
    type: str = Field(max_length=200)
    message: str = Field(max_length=4000)
    where: str = Field(default="", max_length=1000)


class Reply(BaseModel):
    """The worker's answer to one request. Its result's schema depends on the op: see check_reply."""

    model_config = ConfigDict(extra="forbid")
    nonce: str = Field(max_length=64)  # the session's nonce: frames without it are forgeries
    id: int
    ok: bool
    result: Any = None
    error: WorkerErrorInfo | None = None
    forbidden: list[ForbiddenApi] = Field(default_factory=list, max_length=len(FORBIDDEN_APIS))

    @model_validator(mode="after")
    def error_iff_failed(self) -> Reply:
        if self.ok == (self.error is not None):
            raise ValueError("a reply has an error exactly when it is not ok")
        return self


class ParamInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    shape: Shape
    dtype: str = Field(max_length=40)
    requires_grad: bool


class BufferInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    shape: Shape


class ModuleEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal[""] | Name  # "" is the module itself
    type: str = Field(max_length=1000)


class ModuleDescription(BaseModel):
    """The `params` result: what weight mapping needs to know about a built module."""

    model_config = ConfigDict(extra="forbid")
    params: list[ParamInfo]
    buffers: list[BufferInfo]
    modules: list[ModuleEntry]
    shared: Count
    training: bool


class CallResult(BaseModel):
    """The `call` and `forward` result: the student's value (any data), and gradients after a backward."""

    model_config = ConfigDict(extra="forbid")
    value: Any
    input_grads: list[Tensor | None] = Field(default_factory=list)
    param_grads: dict[Name, Tensor | None] = Field(default_factory=dict)


class LoadResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    missing: list[Name]
    unexpected: list[Name]


class TrainResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    losses: Tensor


class ExportResult(BaseModel):
    """The `export` result: a program's graph (checked by vitgrade.program) and the tensors it reads."""

    model_config = ConfigDict(extra="forbid")
    graph: dict[str, Any]
    tensors: dict[Name, Tensor]


RESULTS: dict[str, TypeAdapter[Any]] = {
    "call": TypeAdapter(CallResult),
    "forward": TypeAdapter(CallResult),
    "build": TypeAdapter(Annotated[int, Field(ge=1)]),  # a handle
    "params": TypeAdapter(ModuleDescription),
    "get_state": TypeAdapter(dict[Name, Tensor]),
    "set_state": TypeAdapter(LoadResult),
    "mode": TypeAdapter(None),
    "value": TypeAdapter(bool | int | float | str),
    "load_checkpoint": TypeAdapter(LoadResult),
    "free": TypeAdapter(None),
    "export": TypeAdapter(ExportResult),
    "train": TypeAdapter(TrainResult),
}
TENSOR_RESULTS = {"call", "forward", "get_state", "export", "train"}  # the others' replies carry no tensor payload


def check_result(op: str, result: Any) -> None:
    """ValidationError unless `result` has the shape of `op`'s result: both sides check, so that the
    worker reports what it cannot send as the student's error, and the runner refuses forgeries."""
    RESULTS[op].validate_python(result, strict=True)


def check_reply(data: Any, op: str) -> Reply:
    """A decoded frame as a Reply to `op` that the trusted side may use, or ValidationError."""
    reply = Reply.model_validate(data, strict=True)
    if reply.ok:
        check_result(op, reply.result)
    return reply


class Diagnostic(BaseModel):
    """One thing the loader skipped or could not run, and why."""

    model_config = ConfigDict(extra="forbid")
    where: str = Field(max_length=200)
    action: Literal["skipped", "failed", "note"]
    reason: str = Field(max_length=2000)


class Ready(BaseModel):
    """The worker's first message: what loading the submission gave."""

    model_config = ConfigDict(extra="forbid")
    nonce: str = Field(max_length=64)
    ready: Literal[True]
    names: list[Name] = Field(max_length=10000)
    diagnostics: list[Diagnostic] = Field(default_factory=list, max_length=10000)
    torch: str = Field(max_length=100)
    load_s: float = 0.0  # time spent running the student's code (informational, worker-reported)
