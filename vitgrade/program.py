"""Programs: a student's module or function as data, exported by the worker, judged by the runner.

The worker captures what the runner names with `torch.export` (non-strict) and sends the graph
as JSON and its tensors through the data-only channel. The runner never runs the student's
Python: it parses the graph against this module's schema, accepts only the ATen operators in
ALLOWED (pure tensor math, nothing that reads or writes files, calls Python or data-dependent
code), propagates shapes before anything runs (vitgrade.shapes, then the meta device; every
tensor and the total work bounded), and then executes the graph itself, operator by operator, with the inputs,
weights and seeds it chooses. A worker can hand in any program; that program is what is graded.

The same module writes the format (in the worker, `capture`) and reads it (in the runner,
`Program.parse`), so the two sides cannot drift.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.utils._pytree as pytree
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import save

from .protocol import first_error
from .shapes import infer

MAX_NODES = 20_000
MAX_ELEMENTS = 1 << 25  # one tensor (128 MiB of float32)
MAX_LIVE_ELEMENTS = 1 << 27  # all the tensors a run holds at once
MAX_FLOPS = 5e10  # multiply-adds of matrix products and convolutions in one run
MAX_DEPTH = 8  # nesting of lists in arguments and of the output structure

# Pure tensor operators a ViT, its parts and their tests need, by ATen name (any overload).
ALLOWED = frozenset(
    """
    abs add addmm alias amax amin any all arange argmax baddbmm bitwise_and bitwise_not bitwise_or bmm cat chunk
    clamp clamp_max clamp_min clone contiguous conv2d convolution cos cumsum detach div dropout einsum empty_like
    eq erf exp expand expand_as fill flatten floor full full_like gather ge gelu gt index_select
    layer_norm le linear log log_softmax logical_and logical_not logical_or lt masked_fill matmul max maximum mean
    min minimum mm mul native_dropout native_layer_norm ne neg new_empty new_full new_ones new_zeros ones ones_like
    permute pow rand rand_like randn randn_like reciprocal relu repeat reshape rsqrt scalar_tensor select sigmoid
    silu sin slice softmax split split_with_sizes sqrt square squeeze stack std sub sum t tanh transpose tril triu
    type_as unbind unflatten unfold unsqueeze var view where zeros zeros_like _softmax _log_softmax _to_copy
    _unsafe_view lift_fresh_copy to movedim narrow roll flip sign rsub true_divide copy im2col col2im _assert_tensor_metadata detach_
    scaled_dot_product_attention _scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_attention_math
    _scaled_dot_product_efficient_attention _scaled_dot_product_flash_attention _native_multi_head_attention
    """.split()
)
# Attention that the homework asks students to write themselves: found in a program whatever
# Python name reached it (F.scaled_dot_product_attention, nn.MultiheadAttention, torch._C, ...).
FORBIDDEN_OPS = frozenset(op for op in ALLOWED if "attention" in op)
MATMULS = {"mm", "bmm", "matmul", "addmm", "baddbmm", "linear"}


class ProgramError(Exception):
    """The program is not one the runner will run: malformed, a refused operator, or too large."""


# ---------------------------------------------------------------- the format

Value = Any  # JSON: null, bool, int, float, str, list, or one of the tagged objects below


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    op: str = Field(max_length=200)  # "aten.add.Tensor" or "getitem"
    args: list[Value] = Field(default_factory=list, max_length=64)
    kwargs: dict[str, Value] = Field(default_factory=dict, max_length=32)
    where: str = Field(default="", max_length=500)  # the student's line that made it (for messages)
    inside: str = Field(default="", max_length=200)  # the innermost torch.nn module it ran in, if any (for messages)


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200)
    kind: Literal["parameter", "buffer", "constant", "input"]
    target: str | int  # a state name, or the index of the caller's flattened argument


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["output", "buffer"]
    value: Value
    target: str | None = None  # the buffer a "buffer" output writes


class Graph(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[Input] = Field(max_length=MAX_NODES)
    nodes: list[Node] = Field(max_length=MAX_NODES)
    outputs: list[Output] = Field(max_length=MAX_NODES)
    returns: Value  # the user outputs' structure: an index, {"tuple": [...]} or [...]


# ---------------------------------------------------------------- writing (worker side)


def capture(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Export `module(*args, **kwargs)` as (graph, tensors): the graph as JSON-able data and the
    parameters, buffers and constants it reads, by name."""
    exported = torch.export.export(module, args, kwargs, strict=False)
    signature = exported.graph_signature
    kinds = {"PARAMETER": "parameter", "BUFFER": "buffer", "CONSTANT_TENSOR": "constant", "USER_INPUT": "input"}
    inputs, tensors, leaf = [], {}, 0
    state = exported.state_dict
    for spec in signature.input_specs:
        kind = kinds.get(spec.kind.name)
        if kind is None:
            raise ProgramError(f"an input of kind {spec.kind.name} cannot be exported")
        if kind == "input":
            inputs.append({"name": spec.arg.name, "kind": kind, "target": leaf})
            leaf += 1
            continue
        value = state[spec.target] if spec.target in state else exported.constants[spec.target]
        if not isinstance(value, torch.Tensor):
            raise ProgramError(f"{spec.target} is not a tensor")
        tensors[spec.target] = value.detach()
        inputs.append({"name": spec.arg.name, "kind": kind, "target": spec.target})
    nodes = []
    for node in exported.graph.nodes:
        if node.op != "call_function":
            continue
        op = "getitem" if node.target is operator.getitem else str(node.target)
        nodes.append(
            {"name": node.name, "op": op, "args": _write(node.args), "kwargs": _write(node.kwargs),
             "where": _where(str(node.meta.get("stack_trace") or "")), "inside": _inside(node.meta)}  # fmt: skip
        )
    output_node = next(n for n in exported.graph.nodes if n.op == "output")
    outputs = []
    for spec, value in zip(signature.output_specs, output_node.args[0]):
        if spec.kind.name == "USER_OUTPUT":
            outputs.append({"kind": "output", "value": _write(value)})
        elif spec.kind.name == "BUFFER_MUTATION":
            outputs.append({"kind": "buffer", "value": _write(value), "target": spec.target})
        else:
            raise ProgramError(f"an output of kind {spec.kind.name} cannot be exported")
    count = sum(o["kind"] == "output" for o in outputs)
    returns = _structure(pytree.tree_unflatten(list(range(count)), exported.call_spec.out_spec))
    return {"inputs": inputs, "nodes": nodes, "outputs": outputs, "returns": returns}, tensors


def _where(stack: str) -> str:
    """The innermost line of the student's own code (files named "cell N" or "file") that made a node."""
    lines = stack.strip().splitlines()
    found = ""
    for i, line in enumerate(lines):
        if line.strip().startswith(('File "cell ', 'File "file')):
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            found = f"{line.strip().removeprefix('File ').replace(chr(34), '')}: {code}"
    return found[:500]


def _inside(meta: dict[str, Any]) -> str:
    """The innermost torch.nn module type a node ran in ("MultiheadAttention"), or ""."""
    stack = list((meta.get("nn_module_stack") or {}).values())
    kind = str(stack[-1][1]) if stack and isinstance(stack[-1], tuple) and len(stack[-1]) > 1 else ""
    return kind.rsplit(".", 1)[-1] if kind.startswith("torch.nn.") else ""


# Packages torch.export imports on torch's CUDA build that a capture on the CPU never uses: triton
# (GPU kernels, ~75 MiB resident) and redis (the inductor's remote cache). torch treats them as absent.
NOT_FOR_CAPTURE = ("triton", "redis")


def warm_up() -> None:
    """The first export in a process loads torch.export's machinery (about a second): the worker
    pays it while the runner is still starting, not in a test's time, and without the packages a
    CPU capture never uses (the worker is the largest process of a grade)."""
    for name in NOT_FOR_CAPTURE:
        sys.modules[name] = None  # type: ignore[assignment]  # an import of it raises ImportError
    logging.getLogger("torch.utils.flop_counter").setLevel(logging.ERROR)  # "triton not found", on import
    capture(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), {})


def _write(value: Any) -> Any:
    if isinstance(value, torch.fx.Node):
        return {"node": value.name}
    if isinstance(value, (list, tuple)):
        return [_write(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _write(v) for k, v in value.items()}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": value.type}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ProgramError(f"an operator argument of type {type(value).__name__} cannot be exported")


def _structure(value: Any) -> Any:
    if isinstance(value, int):
        return value
    if isinstance(value, tuple):
        return {"tuple": [_structure(v) for v in value]}
    if isinstance(value, list):
        return [_structure(v) for v in value]
    raise ProgramError(f"a forward that returns {type(value).__name__} cannot be exported")


# ---------------------------------------------------------------- reading (runner side)

DTYPES = {name: getattr(torch, name) for name in ("float32", "float64", "float16", "bfloat16", "int64", "int32",
                                                  "int8", "uint8", "bool")}  # fmt: skip
LAYOUTS = {"strided": torch.strided}
FORMATS = {name: getattr(torch, name) for name in ("contiguous_format", "preserve_format")}
OP_NAME = re.compile(r"^aten\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)$")


@dataclass
class Program:
    """A parsed, validated program: only allowed operators, every reference defined before use."""

    graph: Graph
    ops: list[Callable[..., Any]]
    tensors: dict[str, torch.Tensor]
    freed: list[list[str]]  # after node i, the values no later node or output reads
    made: set[str]  # the names of values the nodes make (the rest are inputs)
    checked: bool = False  # shapes are static: one meta run per program is enough

    @classmethod
    def parse(cls, graph: Any, tensors: dict[str, torch.Tensor]) -> Program:
        try:
            parsed = Graph.model_validate(graph, strict=True)
        except ValidationError as exc:
            raise ProgramError(f"the exported program is malformed: {first_error(exc)}") from None
        defined: set[str] = set()
        for spec in parsed.inputs:
            if spec.kind != "input" and spec.target not in tensors:
                raise ProgramError(f"the program reads {spec.target!r}, which it does not carry")
            defined.add(spec.name)
        ops = []
        last: dict[str, int] = {}  # the index of the last node that reads each value
        for i, node in enumerate(parsed.nodes):
            ops.append(resolve(node.op, node.where))
            for ref in _refs([node.args, node.kwargs]):
                if ref not in defined:
                    raise ProgramError(f"{node.name} uses {ref} before it is defined")
                last[ref] = i
            if node.name in defined:
                raise ProgramError(f"{node.name} is defined twice")
            defined.add(node.name)
        for out in parsed.outputs:
            for ref in _refs(out.value):
                if ref not in defined:
                    raise ProgramError(f"an output uses {ref}, which is not defined")
                last[ref] = len(parsed.nodes)
        _check_returns(parsed.returns, sum(o.kind == "output" for o in parsed.outputs), 0)
        freed: list[list[str]] = [[] for _ in parsed.nodes]
        for name, i in last.items():
            if i < len(parsed.nodes):
                freed[i].append(name)
        return cls(parsed, ops, tensors, freed, {node.name for node in parsed.nodes})

    def files(self) -> tuple[str, bytes, bytes]:
        """(sha256, graph JSON, safetensors): the program as it is stored and named in a report."""
        graph = json.dumps(self.graph.model_dump(), sort_keys=True, separators=(",", ":")).encode()
        tensors = save({k: v.detach().contiguous() for k, v in sorted(self.tensors.items())})
        digest = hashlib.sha256(graph + b"\0" + tensors).hexdigest()
        return digest, graph, tensors

    def forbidden(self) -> set[tuple[str, str]]:
        """The attention operators the homework forbids that this program runs, each with the torch.nn
        module it ran in (the worker's word, used only to name it)."""
        found = set()
        for node in self.graph.nodes:
            name = node.op.split(".")[1] if node.op.startswith("aten.") else ""
            if name in FORBIDDEN_OPS:
                found.add((name, node.inside))
        return found

    def check_shapes(self, state: dict[str, torch.Tensor], leaves: list[Any]) -> None:
        """Run on the meta device: every tensor and the total work within bounds, before any real run."""
        if self.checked:
            return
        meta = {k: v.to("meta") for k, v in state.items()}
        meta_leaves = [v.to("meta") if isinstance(v, torch.Tensor) else v for v in leaves]
        with torch.device("meta"):
            self.run(meta, meta_leaves, deadline=None, measure=True)
        self.checked = True

    def run(
        self, state: dict[str, torch.Tensor], leaves: list[Any], deadline: float | None, measure: bool = False
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        """Execute on `state` (parameters, buffers and constants by name) and the caller's flattened
        arguments; returns the user outputs in their structure and the buffers the run wrote."""
        env: dict[str, Any] = {}
        for spec in self.graph.inputs:
            if spec.kind == "input":
                if not isinstance(spec.target, int) or not 0 <= spec.target < len(leaves):
                    raise ProgramError(f"the program expects an argument the grader does not pass ({spec.name})")
                env[spec.name] = leaves[spec.target]
            else:
                env[spec.name] = state[str(spec.target)]
        live, flops = 0, 0.0
        device = torch.device("meta" if measure else "cpu")  # tensors made from nothing follow the run
        for node, fn, freed in zip(self.graph.nodes, self.ops, self.freed):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("the program ran past the test's time limit")
            args = _read(node.args, env, device)
            kwargs = _read(node.kwargs, env, device)
            try:
                value = infer(node.op, args, kwargs) if measure else None
                if value is None:  # no rule for this call (or a real run): torch runs it
                    value = fn(*args, **kwargs)
            except ProgramError:
                raise
            except Exception as exc:
                raise ProgramError(f"{node.op} failed: {str(exc)[:300]} [{node.where}]") from None
            if measure:
                flops += _flops(node.op, args, value)
                if flops > MAX_FLOPS:
                    raise ProgramError(f"the program needs more than {MAX_FLOPS:.0e} multiply-adds [{node.where}]")
                for t in _tensors(value):
                    if t.numel() > MAX_ELEMENTS:
                        raise ProgramError(
                            f"{node.op} makes a tensor of {tuple(t.shape)}, over the {MAX_ELEMENTS} elements a "
                            f"program may hold in one tensor [{node.where}]"
                        )
                    live += t.numel()
                if live > MAX_LIVE_ELEMENTS:
                    raise ProgramError(f"the program holds more than {MAX_LIVE_ELEMENTS} elements at once [{node.where}]")
            env[node.name] = value
            for name in freed:  # values no later node reads: memory stays what the program holds at once
                if measure and name in self.made:
                    live -= sum(t.numel() for t in _tensors(env[name]))
                del env[name]
        results = [_read(o.value, env, device) for o in self.graph.outputs if o.kind == "output"]
        written = {str(o.target): _read(o.value, env, device) for o in self.graph.outputs if o.kind == "buffer"}
        return _build(self.graph.returns, results), written


def resolve(op: str, where: str) -> Callable[..., Any]:
    """The callable for an operator name, only if it is allowed."""
    if op == "getitem":
        return _getitem
    match = OP_NAME.match(op)
    if match is None or match.group(1) not in ALLOWED:
        name = match.group(1) if match else op
        raise ProgramError(f"the program uses {name}, which the grader does not run" + (f" [{where}]" if where else ""))
    packet = getattr(torch.ops.aten, match.group(1), None)
    overload = getattr(packet, match.group(2), None) if packet is not None else None
    if overload is None:
        raise ProgramError(f"the program uses {op}, which this torch does not have")
    return overload  # type: ignore[no-any-return]


def _getitem(container: Any, index: Any) -> Any:
    if not isinstance(container, (tuple, list)) or not isinstance(index, int):
        raise ProgramError("getitem is only taken on an operator's tuple result")
    return container[index]


def _refs(value: Any, depth: int = 0) -> Iterator[str]:
    if depth > MAX_DEPTH:
        raise ProgramError("an argument is nested too deeply")
    if isinstance(value, dict):
        if set(value) == {"node"}:
            yield str(value["node"])
            return
        for v in value.values():
            yield from _refs(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _refs(v, depth + 1)


def _read(value: Any, env: dict[str, Any], device: torch.device) -> Any:
    if isinstance(value, list):
        return [_read(v, env, device) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            (tag, item), = value.items()
            if tag == "node":
                return env[item]
            if tag == "dtype":
                return _lookup(DTYPES, item, "dtype")
            if tag == "device":
                if item != "cpu":
                    raise ProgramError(f"the program asks for device {item}; the grader runs on the CPU")
                return device
            if tag == "layout":
                return _lookup(LAYOUTS, item, "layout")
            if tag == "memory_format":
                return _lookup(FORMATS, item, "memory format")
        return {k: _read(v, env, device) for k, v in value.items()}
    return value


def _lookup(table: dict[str, Any], key: Any, what: str) -> Any:
    if key not in table:
        raise ProgramError(f"the program uses {what} {str(key)[:40]}, which the grader does not run")
    return table[key]


def _check_returns(value: Any, count: int, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ProgramError("the program's result is nested too deeply")
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < count:
            raise ProgramError("the program's result refers to an output it does not have")
        return
    items = value.get("tuple") if isinstance(value, dict) and set(value) == {"tuple"} else value
    if not isinstance(items, list):
        raise ProgramError("the program's result structure is malformed")
    for item in items:
        _check_returns(item, count, depth + 1)


def _build(value: Any, results: list[Any]) -> Any:
    """The outputs in their structure; tuples as lists, as the channel gives them to test code."""
    if isinstance(value, int):
        return results[value]
    return [_build(v, results) for v in (value["tuple"] if isinstance(value, dict) else value)]


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)


def _flops(op: str, args: list[Any], value: Any) -> float:
    """Multiply-adds of one matrix product, convolution or einsum, from its inputs and output (meta)."""
    name = op.split(".")[1] if op.startswith("aten.") else ""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    out = value.numel() if isinstance(value, torch.Tensor) else 0
    if name in MATMULS and len(tensors) >= 2:
        a = tensors[1] if name in ("addmm", "baddbmm") else tensors[0]
        return float(out) * (a.shape[-1] if a.dim() else 1)
    if name in ("conv2d", "convolution") and len(tensors) >= 2:
        return float(out) * tensors[1][0].numel()
    if name == "einsum" and len(args) > 1 and isinstance(args[0], str) and isinstance(args[1], list):
        sizes: dict[str, int] = {}
        for letters, t in zip(args[0].split("->")[0].split(","), args[1]):
            if isinstance(t, torch.Tensor) and len(letters.strip()) == t.dim():
                sizes.update(zip(letters.strip(), t.shape))
        return float(torch.Size(list(sizes.values())).numel())
    return 0.0


def pair_outputs(value: Any, grad_output: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Match a (possibly tuple) output with the gradients given for it; None skips an output."""
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    grads = list(grad_output) if isinstance(grad_output, list) else [grad_output]
    outputs, chosen = [], []
    for out, grad in zip(values, grads):
        if grad is not None and isinstance(out, torch.Tensor) and out.requires_grad:
            if out.shape != grad.shape:
                raise RuntimeError(f"an output of shape {tuple(out.shape)} gets a gradient of shape {tuple(grad.shape)}")
            outputs.append(out)
            chosen.append(grad.to(out.dtype))
    if not outputs:
        raise RuntimeError("the output does not depend on anything that requires a gradient")
    return outputs, chosen
