"""The worker: the untrusted side. It holds the student's code and nothing else.

It is started by a sandbox backend with stdin/stdout as the channel. It moves the channel to
private descriptors, points the student's stdout and stderr at the captured stderr stream, runs
the extracted code statement by statement, and then answers instructions (build this class, call
that function with these tensors, backward with this gradient, ...). It never sees test code,
the reference or an expected value, so there is nothing here worth forging.
"""

from __future__ import annotations

import ast
import importlib.machinery
import inspect
import io
import linecache
import os
import sys
import time
import traceback
import types
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch
import torch.nn as nn
from pydantic import ValidationError

from .pages import release_cuda_pages
from .program import capture, pair_outputs, warm_up
from .protocol import (
    FORBIDDEN_APIS,
    MAX_BLOB,
    MAX_TENSOR_ELEMENTS,
    Diagnostic,
    ErrorKind,
    ForbiddenApi,
    FrameReader,
    Ready,
    Reply,
    Request,
    WorkerErrorInfo,
    check_result,
    decode,
    encode,
    first_error,
    pack,
    printable,
    write_all,
    write_frame,
)
from .training import train

OOM_MARKERS = ("can't allocate memory", "DefaultCPUAllocator", "out of memory")


class BadRequest(Exception):
    """The instruction names something the submission does not define."""


class OutputTooLarge(Exception):
    """The student's result would not fit in one frame."""


class ExportFailed(Exception):
    """The student's code runs, but torch.export cannot capture it as a program."""


class Call(nn.Module):
    """A top-level function of the submission as a module, so that it can be exported."""

    def __init__(self, function: Callable[..., Any]):
        super().__init__()
        self.function = function

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)


def capture_failure(exc: BaseException) -> str:
    """torch.export's reason, cut to what a student can act on (its messages run to pages)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    return f"the grader cannot capture your code as a program ({type(exc).__name__}: {reason[:400]})"


class Worker:
    def __init__(self, chan_in: int, chan_out: int, nonce: str):
        self.reader = FrameReader(chan_in)
        self.nonce = nonce
        self.chan_out = chan_out
        # A real module in sys.modules, as a notebook's __main__ is: @dataclass and pickling look
        # the defining module up by name.
        module = types.ModuleType("submission")
        sys.modules["submission"] = module
        self.ns: dict[str, Any] = module.__dict__
        self.handles: dict[int, Any] = {}
        self.forbidden: set[ForbiddenApi] = set()
        self.watch_forbidden()

    def watch_forbidden(self) -> None:
        """Wrap the APIs the homework forbids before student code can take a reference to them."""
        for api in FORBIDDEN_APIS:
            space, name = api.split(".")
            if space == "F":
                setattr(torch.nn.functional, name, self.recorder(api, getattr(torch.nn.functional, name)))
            else:
                cls = getattr(nn, name)
                cls.forward = self.recorder(api, cls.forward)

    def recorder(self, api: ForbiddenApi, function: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            if called_by_student(sys._getframe(1)):
                self.forbidden.add(api)
            return function(*args, **kwargs)

        return recorded

    # ------------------------------------------------------------ loading

    def load(self, program: list[dict[str, str]]) -> list[Diagnostic]:
        """Run each kept statement on its own, so one failing import does not lose the rest."""
        notes: list[Diagnostic] = []
        trees = []
        for chunk in program:
            where, source = str(chunk["where"]), str(chunk["source"])
            linecache.cache[where] = (len(source), None, source.splitlines(True), where)
            trees.append((where, ast.parse(source)))
        used = {node.id for _, tree in trees for node in ast.walk(tree) if isinstance(node, ast.Name)}
        for where, tree in trees:
            for node in tree.body:
                if unused_import(node, used):
                    names = ", ".join(alias.asname or alias.name for alias in node.names)  # type: ignore[attr-defined]
                    reason = f"import not run: no kept code uses {names}"
                    notes.append(
                        Diagnostic(where=f"{where}, line {node.lineno}", action="skipped", reason=reason[:2000])
                    )
                    continue
                code = compile(ast.Module(body=[node], type_ignores=[]), where, "exec")
                try:
                    exec(code, self.ns)
                except BaseException as exc:  # student code may raise anything, SystemExit included
                    what = "import failed" if isinstance(node, (ast.Import, ast.ImportFrom)) else "raised"
                    notes.append(
                        Diagnostic(
                            where=f"{where}, line {node.lineno}",
                            action="failed",
                            reason=printable(f"{what}: {type(exc).__name__}: {exc}", 2000),
                        )
                    )
        return notes

    # ------------------------------------------------------------ instructions

    def lookup(self, name: Any, kind: type | None = None) -> Any:
        if not isinstance(name, str) or name not in self.ns:
            raise BadRequest(f"your submission does not define {name}")
        value = self.ns[name]
        if kind is type and not isinstance(value, type):
            raise BadRequest(f"{name} is not a class")
        if kind is None and not callable(value):
            raise BadRequest(f"{name} is not a function")
        return value

    def module(self, handle: Any) -> Any:
        if handle not in self.handles:
            raise BadRequest(f"no object with handle {handle}")
        return self.handles[handle]

    def handle(self, req: Request) -> Any:
        if req.seed is not None:
            torch.manual_seed(req.seed)
        args, kwargs = req.args, req.kwargs
        if req.op == "call":
            return self.invoke(self.lookup(req.target), req, None)
        if req.op == "build":
            obj = call_student(self.lookup(req.target, type), args, kwargs)
            handle = len(self.handles) + 1
            self.handles[handle] = obj
            return handle
        if req.op == "forward":
            return self.invoke(self.module(req.target), req, self.module(req.target))
        if req.op == "params":
            return describe(self.module(req.target))
        if req.op == "get_state":
            return dict(self.module(req.target).state_dict())
        if req.op == "set_state":
            result = self.module(req.target).load_state_dict(args[0], strict=True)
            return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
        if req.op == "mode":
            self.module(req.target).train(bool(args[0]))
            return None
        if req.op == "value":
            value = self.ns.get(str(req.target))
            if not isinstance(value, (bool, int, float, str)):
                raise BadRequest(f"your submission has no literal value named {req.target}")
            return value
        if req.op == "load_checkpoint":
            return load_checkpoint(self.module(req.target), args[0])
        if req.op == "train":
            return train(self.module(req.target), args[0], args[1], **kwargs)
        if req.op == "export":
            return self.export(req)
        if req.op == "free":
            if isinstance(req.target, int):
                self.handles.pop(req.target, None)
            return None
        raise BadRequest(f"operation {req.op} is not supported by this worker")

    def export(self, req: Request) -> dict[str, Any]:
        """Capture a module's forward (in the mode asked for) or a function as a program. Where
        capture fails on code that runs, the student hears which line and why; where the code
        itself fails, its own error is reported, as a plain call would."""
        if isinstance(req.target, int):
            module = self.module(req.target)
            if req.training is not None:
                module.train(req.training)
        else:
            module = Call(self.lookup(req.target))
        try:
            graph, tensors = capture(module, tuple(req.args), dict(req.kwargs))
        except Exception as exc:
            call_student(module, list(req.args), dict(req.kwargs))  # the student's own error, if there is one
            raise ExportFailed(capture_failure(exc)) from exc
        return {"graph": graph, "tensors": tensors}

    def invoke(self, fn: Callable[..., Any], req: Request, module: Any) -> Any:
        """Call fn; with grad_output, backpropagate and return gradients of inputs and params."""
        args = list(req.args)
        for i in req.grad_inputs:
            args[i] = args[i].detach().clone().requires_grad_(True)
        if module is not None and req.grad_output is not None:
            module.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(req.grad_output is not None or bool(req.grad_inputs)):
            value = call_student(fn, args, req.kwargs)
        if req.grad_output is None:
            return {"value": value}
        outputs, grads = pair_outputs(value, req.grad_output)
        torch.autograd.backward(outputs, grads)
        result: dict[str, Any] = {"value": value, "input_grads": [args[i].grad for i in req.grad_inputs]}
        if module is not None:
            result["param_grads"] = {n: p.grad for n, p in module.named_parameters()}
        return result

    # ------------------------------------------------------------ the loop

    def serve(self) -> None:
        while True:
            header, tensors = self.reader.read()
            raw = decode(header, tensors)
            self.forbidden = set()
            try:
                req = Request.model_validate(raw)
            except Exception as exc:
                self.send(
                    Reply(nonce=self.nonce, id=int(raw.get("id", -1)), ok=False, error=error_info(exc, "bad_request")),
                    None,
                )
                continue
            try:
                result = self.handle(req)
                reply = Reply(
                    nonce=self.nonce,
                    id=req.id,
                    ok=True,
                    result=result,
                    forbidden=sorted(self.forbidden),
                )
            except BaseException as exc:  # SystemExit and KeyboardInterrupt from student code too
                reply = Reply(
                    nonce=self.nonce,
                    id=req.id,
                    ok=False,
                    error=error_info(exc),
                    forbidden=sorted(self.forbidden),
                )
            self.send(reply, req.op)

    def send(self, reply: Reply, op: str | None) -> None:
        """Send a reply, or the reason it cannot be sent: never a frame the runner would refuse."""
        payload = reply.model_dump(exclude={"result"})
        try:
            if reply.ok and op is not None:
                try:
                    check_result(op, reply.result)
                except ValidationError as exc:
                    raise ValueError(f"the grader cannot use this result: {first_error(exc)}") from None
            payload["result"], tensors = encode(reply.result)
            size = sum(t.numel() * t.element_size() for t in tensors.values())
            biggest = max((t.numel() for t in tensors.values()), default=0)
            if size > MAX_BLOB or biggest > MAX_TENSOR_ELEMENTS:
                raise OutputTooLarge(
                    f"the result is too large to send back: {biggest} elements in one tensor (limit "
                    f"{MAX_TENSOR_ELEMENTS}), {size} bytes in all (limit {MAX_BLOB})"
                )
            frame = pack(payload, tensors)
        except Exception as exc:
            failed = {
                "nonce": self.nonce,
                "id": reply.id,
                "ok": False,
                "result": None,
                "error": error_info(exc).model_dump(),
            }
            frame = pack(failed, {})
        write_all(self.chan_out, frame)


TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
MODULE_CALL = torch.nn.modules.module.__file__  # nn.Module.__call__, which calls every forward


def called_by_student(frame: FrameType | None) -> bool:
    """Whether the code that called a forbidden API (from `frame`, nn.Module's call machinery aside) is
    not torch's own: nn.MultiheadAttention runs F.scaled_dot_product_attention, and that is not the
    student's call; a student's nn.MultiheadAttention is called from the student's code."""
    while frame is not None and frame.f_code.co_filename == MODULE_CALL:
        frame = frame.f_back
    return frame is None or not frame.f_code.co_filename.startswith(TORCH_DIR)


def call_student(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Call a function, class or module of the submission; a TypeError that the call itself raised,
    because the signature does not accept what the grader passes, says how to change the signature."""
    try:
        return fn(*args, **kwargs)
    except TypeError as exc:
        hint = signature_hint(fn, args, kwargs)
        if hint is None:
            raise
        raise TypeError(f"{exc}: {hint}") from exc


def signature_hint(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """What to change in fn's signature so that fn(*args, **kwargs) binds; None when it already binds
    (then the TypeError came from inside the student's code) or the signature cannot be read."""
    target = type(fn).forward if isinstance(fn, nn.Module) else fn.__init__ if isinstance(fn, type) else fn  # type: ignore[misc]
    bound = [None] if target is not fn else []  # forward and __init__ take self first
    try:
        sig = inspect.signature(target)
        sig.bind(*bound, *args, **kwargs)
        return None
    except (TypeError, ValueError):
        pass
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    kinds = {p.kind for p in params}
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    passed = len(bound) + len(args)
    added: list[str] = []
    if inspect.Parameter.VAR_POSITIONAL not in kinds:
        for index in range(len(positional), passed):
            value = args[index - len(bound)]
            added.append("mask" if isinstance(value, torch.Tensor) and value.dtype == torch.bool else f"arg{index}")
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        added += [name for name in kwargs if name not in sig.parameters]
    defaults = [p.name for p in positional[passed:] if p.default is p.empty and p.name not in kwargs]
    params = [p.replace(default=None) if p.name in defaults else p for p in params]
    at = len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    params[at:at] = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for name in added]
    try:
        fixed = f"{target.__name__}{sig.replace(parameters=params, return_annotation=inspect.Signature.empty)}"
    except ValueError:  # e.g. a keyword the grader passes is also taken positionally
        return None
    advice = []
    if added:
        names = ", ".join(f"`{name}=None`" for name in added)
        advice.append(f"add {'a ' + names + ' parameter' if len(added) == 1 else 'the parameters ' + names}")
    if defaults:
        advice.append(f"give {', '.join(f'`{name}`' for name in defaults)} a default")
    return f"{' and '.join(advice)}: {fixed}" if advice else None


def unused_import(node: ast.stmt, used: set[str]) -> bool:
    """An import of a package not loaded yet, binding only names that no kept code refers to.

    Running it could change nothing that is graded, yet the course's `from torchvision import
    datasets, transforms` alone costs 2 s and 160 MB per worker. A module that cannot be found
    is still imported, so that the failure is reported as before.
    """
    if isinstance(node, ast.ImportFrom):
        if node.level or node.module is None or any(alias.name == "*" for alias in node.names):
            return False
        modules = [node.module]
        bound = {alias.asname or alias.name for alias in node.names}
    elif isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
        bound = {alias.asname or alias.name.split(".")[0] for alias in node.names}
    else:
        return False
    if bound & used:
        return False
    return all(name.split(".")[0] not in sys.modules and findable(name) for name in modules)


def findable(dotted: str) -> bool:
    """Whether a module exists on sys.path, found without running any package's code."""
    path: list[str] | None = None
    parts = dotted.split(".")
    for depth in range(1, len(parts) + 1):
        try:
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:depth]), path)
        except (ImportError, ValueError, OSError):  # then the import itself runs and reports why
            return False
        if spec is None:
            return False
        path = list(spec.submodule_search_locations or [])
        if not path and depth < len(parts):
            return False
    return True


def load_checkpoint(model: Any, data: torch.Tensor) -> dict[str, Any]:
    """torch.load with weights_only=True (no unpickling of arbitrary objects), here in the worker."""
    state = torch.load(io.BytesIO(data.numpy().tobytes()), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    result = model.load_state_dict(state, strict=True)
    return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}


def describe(obj: Any) -> dict[str, Any]:
    """Names, shapes and types: what the grader needs to map the reference's weights onto yours."""
    if not isinstance(obj, nn.Module):
        raise BadRequest(f"{type(obj).__name__} is not an nn.Module")
    return {
        "params": [
            {"name": n, "shape": list(p.shape), "dtype": str(p.dtype), "requires_grad": p.requires_grad}
            for n, p in obj.named_parameters()
        ],
        "buffers": [{"name": n, "shape": list(b.shape)} for n, b in obj.named_buffers()],
        "modules": [
            {"name": n, "type": f"{type(m).__module__}.{type(m).__qualname__}"} for n, m in obj.named_modules()
        ],
        "shared": len(list(obj.named_parameters(remove_duplicate=False))) - len(list(obj.named_parameters())),
        "training": obj.training,
    }


def error_info(exc: BaseException, kind: ErrorKind | None = None) -> WorkerErrorInfo:
    """Describe an exception by type, message and the innermost line of the student's own code."""
    message = str(exc)
    if kind is None:
        if isinstance(exc, NotImplementedError):
            kind = "not_implemented"
        elif isinstance(exc, MemoryError) or any(m in message for m in OOM_MARKERS):
            kind = "oom"
        elif isinstance(exc, BadRequest):
            kind = "missing"
        elif isinstance(exc, ExportFailed):
            kind = "export"
        else:
            kind = "exception"
    where = ""
    origin = exc.__cause__ if isinstance(exc, ExportFailed) and exc.__cause__ is not None else exc
    for frame in traceback.extract_tb(origin.__traceback__):
        if frame.filename.startswith(("cell ", "file")):
            where = f"{frame.filename}, line {frame.lineno}, in {frame.name}: {(frame.line or '').strip()}"
    if isinstance(exc, SystemExit):
        message = f"your code called sys.exit({exc.code!r})"
    return WorkerErrorInfo(
        kind=kind, type=printable(type(exc).__name__), message=printable(message, 4000), where=printable(where, 1000)
    )


def main() -> None:
    chan_in, chan_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # student prints go to the captured stream, never into the channel
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    release_cuda_pages()
    warm_up()
    header, _ = FrameReader(chan_in).read()
    torch.set_num_threads(int(header.get("threads", 1)))
    nonce = str(header.get("nonce", ""))
    worker = Worker(chan_in, chan_out, nonce)
    started = time.perf_counter()
    notes = worker.load(list(header.get("program", [])))
    load_s = time.perf_counter() - started
    names = sorted(k for k in worker.ns if isinstance(k, str) and k.isidentifier() and not k.startswith("__"))
    ready = Ready(
        nonce=nonce, ready=True, names=names, diagnostics=notes, torch=torch.__version__, load_s=round(load_s, 4)
    )
    write_frame(chan_out, ready.model_dump())
    worker.serve()


if __name__ == "__main__":
    main()
