"""The data-only channel between the runner (trusted) and the worker (untrusted).

A frame is a fixed 16-byte prefix (magic, header length, blob length), a JSON header and a
safetensors blob holding every tensor of the message. JSON values refer to tensors as
``{"$t": name}``. Nothing here ever unpickles or evaluates what it reads: JSON and safetensors
are plain data, and the trusted side checks sizes, schema, dtypes and shapes before use.

This module is imported by both sides, so it depends only on the standard library, torch,
safetensors and pydantic. torch is imported on first use, not with the module: the runner
starts its worker (whose own torch import takes seconds) before it pays for torch itself.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

MAGIC = b"VGW1"
PREFIX = struct.Struct(">4sIQ")  # magic, header bytes, blob bytes
MAX_HEADER = 4 << 20  # JSON header cap (4 MiB)
MAX_BLOB = 256 << 20  # tensor payload cap (256 MiB)
MAX_TENSOR_ELEMENTS = 32 << 20
ALLOWED_DTYPES = {"float16", "bfloat16", "float32", "float64", "int64", "int32", "uint8", "bool"}
MAX_NESTING = 32


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame or message."""


class ChannelTimeout(Exception):
    """No complete frame arrived before the deadline."""


class ChannelClosed(Exception):
    """The peer closed the channel (usually: the worker died)."""


# ---------------------------------------------------------------- encoding values with tensors


def encode(value: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Replace every tensor in a JSON-like value by a reference; return (json_value, tensors)."""
    import torch

    tensors: dict[str, torch.Tensor] = {}

    def walk(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = v.detach().cpu().contiguous().clone()
            return {"$t": name}
        if isinstance(v, dict):
            return {str(key): walk(item) for key, item in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(item) for item in v]
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise TypeError(f"cannot send a value of type {type(v).__name__}")

    return walk(value), tensors


def decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of encode: put the tensors back where the references are."""

    def walk(v: Any, depth: int) -> Any:
        if depth > MAX_NESTING:
            raise ProtocolError("message nested too deeply")
        if isinstance(v, dict):
            if set(v) == {"$t"}:
                try:
                    return tensors[v["$t"]]
                except (KeyError, TypeError):
                    raise ProtocolError(f"reference to a missing tensor {v['$t']!r}") from None
            return {key: walk(item, depth + 1) for key, item in v.items()}
        if isinstance(v, list):
            return [walk(item, depth + 1) for item in v]
        return v

    return walk(value, 0)


def pack(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bytes:
    head = json.dumps(header, allow_nan=True, separators=(",", ":")).encode()
    blob = b""
    if tensors:
        from safetensors.torch import save

        blob = save(tensors)
    return PREFIX.pack(MAGIC, len(head), len(blob)) + head + blob


def unpack(head: bytes, blob: bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Parse a frame body. Raises ProtocolError for anything that is not plain, bounded data."""
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    tensors: dict[str, torch.Tensor] = {}
    if blob:
        from safetensors.torch import load

        try:
            tensors = load(blob)
        except Exception as exc:  # safetensors reports malformed data in several ways
            raise ProtocolError(f"tensor payload is not valid safetensors: {exc}") from None
        for name, t in tensors.items():
            if str(t.dtype).removeprefix("torch.") not in ALLOWED_DTYPES:
                raise ProtocolError(f"tensor {name} has a disallowed dtype {t.dtype}")
            if t.numel() > MAX_TENSOR_ELEMENTS:
                raise ProtocolError(f"tensor {name} has {t.numel()} elements (limit {MAX_TENSOR_ELEMENTS})")
    return header, tensors


# ---------------------------------------------------------------- reading and writing frames


def write_frame(fd: int, header: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
    data = memoryview(pack(header, tensors or {}))
    while data:
        written = os.write(fd, data)
        data = data[written:]


class FrameReader:
    """Reads frames from a file descriptor with a deadline and hard size limits."""

    def __init__(self, fd: int, max_header: int = MAX_HEADER, max_blob: int = MAX_BLOB):
        self.fd = fd
        self.max_header = max_header
        self.max_blob = max_blob
        self.buffer = bytearray()

    def _fill(self, size: int, deadline: float | None) -> None:
        while len(self.buffer) < size:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                raise ChannelTimeout()
            chunk = os.read(self.fd, max(65536, min(size - len(self.buffer), 16 << 20)))
            if not chunk:
                raise ChannelClosed()
            self.buffer += chunk

    def read(self, deadline: float | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        self._fill(PREFIX.size, deadline)
        magic, head_len, blob_len = PREFIX.unpack_from(self.buffer)
        if magic != MAGIC:
            raise ProtocolError("bad frame magic")
        if head_len > self.max_header:
            raise ProtocolError(f"header of {head_len} bytes exceeds the limit of {self.max_header}")
        if blob_len > self.max_blob:
            raise ProtocolError(f"tensor payload of {blob_len} bytes exceeds the limit of {self.max_blob}")
        total = PREFIX.size + head_len + blob_len
        self._fill(total, deadline)
        frame = bytes(self.buffer[:total])
        del self.buffer[:total]
        return unpack(frame[PREFIX.size : PREFIX.size + head_len], frame[PREFIX.size + head_len :])


# ---------------------------------------------------------------- message schemas

Op = Literal[
    "call",  # call a top-level function of the submission
    "build",  # instantiate a class of the submission -> handle
    "forward",  # call a built module (optionally backward with a given gradient)
    "params",  # parameter names/shapes and the module tree of a handle
    "get_state",  # a handle's state_dict as tensors
    "set_state",  # load a state_dict into a handle
    "mode",  # train() / eval()
    "train",  # the grader's own training loop on given data
    "predict",  # argmax predictions of a handle on given images
    "value",  # a literal top-level value of the submission (a hyper-parameter)
    "load_checkpoint",  # load a state_dict from checkpoint bytes, weights-only
    "free",  # drop a handle
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
    trace: bool = False  # record calls to the student's scaled_dot_product_attention


class WorkerErrorInfo(BaseModel):
    """What went wrong inside the worker, described by the worker (untrusted text, capped)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["exception", "not_implemented", "oom", "missing", "bad_request"]
    type: str = Field(max_length=200)
    message: str = Field(max_length=4000)
    where: str = Field(default="", max_length=1000)


class SdpaCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    q: list[int]
    k: list[int]
    v: list[int]
    mask: list[int] | None = None


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nonce: str = Field(max_length=64)  # the session's nonce: frames without it are forgeries
    id: int
    ok: bool
    result: Any = None
    error: WorkerErrorInfo | None = None
    trace: list[SdpaCall] = Field(default_factory=list, max_length=10000)
    forbidden: list[Literal["F.scaled_dot_product_attention", "nn.MultiheadAttention", "nn.TransformerEncoderLayer", "nn.TransformerEncoder"]] = Field(default_factory=list, max_length=4)


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
    names: list[str] = Field(max_length=10000)
    diagnostics: list[Diagnostic] = Field(default_factory=list, max_length=10000)
    torch: str = Field(max_length=100)
    load_s: float = 0.0  # time spent running the student's code (informational, worker-reported)
