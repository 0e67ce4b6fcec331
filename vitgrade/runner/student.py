"""The `student` fixture: a proxy that turns test code's calls into worker instructions.

Test authors call the student's functions and modules as if they were local, but only data
crosses: names, tensors and numbers go out, programs and tensors come back. A call or forward
is answered by a program: the worker exports what was named for these inputs (vitgrade.program)
and the runner executes it with its own copy of the weights, its own inputs and seeds, and
computes gradients and trains it itself. The worker's word is taken only for structure (names
and shapes of parameters).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree

from ..program import Program, ProgramError, pair_outputs
from ..training import predict, reference_initialization, train
from .budget import Budget
from .judge import GradingFailure
from .judging import Judging
from .session import StudentError, WorkerSession, WorkerTimeout
from .transcript import signature

# What a forbidden attention operator in a program is reported as (vitgrade.protocol's names), by
# the torch.nn module it ran in; anywhere else it is the attention function itself.
FORBIDDEN_MODULES = {
    "MultiheadAttention": "nn.MultiheadAttention",
    "TransformerEncoderLayer": "nn.TransformerEncoderLayer",
    "TransformerEncoder": "nn.TransformerEncoder",
}


class BudgetExhausted(Exception):
    """The grade's budget ended before or during this test."""


@dataclass
class Result:
    """What one call gave back: the value and, after a backward, the gradients."""

    value: Any
    input_grads: list[torch.Tensor | None] = field(default_factory=list)
    param_grads: dict[str, torch.Tensor | None] = field(default_factory=dict)


@dataclass
class Param:
    name: str
    shape: tuple[int, ...]
    requires_grad: bool


@dataclass
class ModuleInfo:
    """Names, shapes and module types of a built object: what weight mapping needs."""

    params: list[Param]
    buffers: dict[str, tuple[int, ...]]
    modules: dict[str, str]  # dotted name -> qualified type name
    shared: int  # parameters registered more than once
    training: bool

    def count(self) -> int:
        return sum(int(torch.Size(p.shape).numel()) for p in self.params)


class Student:
    """The submission as test code sees it. Every call counts against the test's deadline."""

    def __init__(self, session: WorkerSession, timeout: float, budget: Budget, judging: Judging | None = None):
        self.session = session
        self.judging = judging or Judging()
        self.budget = budget
        self.deadline = min(time.monotonic() + timeout, budget.deadline)
        self.budget_binds = self.deadline == budget.deadline  # the budget, not the test's limit, ends this test
        self.timeout = timeout
        self.programs: dict[Any, Program] = {}  # (function name, inputs' signature) -> program
        self.draws = 0  # runs without a seed get 0, 1, 2, ...: reproducible, and two runs differ

    def remaining(self) -> float:
        return max(0.01, self.deadline - time.monotonic())

    def defines(self, name: str) -> bool:
        return name in self.session.ensure().names

    def _ask(self, op: str, target: Any, label: str, **fields: Any) -> Any:
        try:
            return self.session.request(op, target, timeout=self.remaining(), limit=self.timeout, label=label, **fields)
        except WorkerTimeout as exc:
            raise self._timed_out(exc) from None

    def _timed_out(self, exc: WorkerTimeout) -> Exception:
        """A test that ran out of time: the grade's budget when that is what ended it, else the test's limit."""
        if self.budget_binds:
            self.budget.used_up = True
            return BudgetExhausted(self.budget.message())
        return exc

    def export(
        self, target: Any, label: str, args: tuple[Any, ...], kwargs: dict[str, Any], training: bool | None
    ) -> Program | None:
        """The worker's program for target(*args, **kwargs), parsed and checked; its forbidden operators
        noted. None where the code cannot be captured and the instructor allowed the worker's word."""
        try:
            reply = self._ask("export", target, label, args=list(args), kwargs=kwargs, training=training)
        except StudentError as exc:
            if exc.info.kind != "export" or not self.judging.allow_unverified:
                raise
            self.judging.unverified.add(label)
            return None
        try:
            program = Program.parse(reply.result["graph"], reply.result["tensors"])
        except ProgramError as exc:
            raise GradingFailure(f"{label}: {exc}") from None
        mode = "" if training is None else " (train mode)" if training else " (eval mode)"
        shapes = ", ".join(str(tuple(v.shape)) if isinstance(v, torch.Tensor) else repr(v)[:40]
                           for v in pytree.tree_leaves((tuple(args), dict(kwargs))))  # fmt: skip
        self.judging.record(program, f"{label}{mode} on {shapes}")
        found = {
            FORBIDDEN_MODULES.get(inside, "nn.MultiheadAttention" if op == "_native_multi_head_attention" else "F.scaled_dot_product_attention")
            for op, inside in program.forbidden()
        }
        if found:
            self.session.forbidden_seen.setdefault(label, set()).update(found)
        return program

    def execute(
        self,
        program: Program,
        label: str,
        state: dict[str, torch.Tensor],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seed: int | None,
        grad: bool,
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        """Run a program in the runner: shapes and work checked on the meta device first, then the real run
        under this test's deadline, with the randomness of `seed` (or the next draw)."""
        leaves = pytree.tree_leaves((tuple(args), dict(kwargs)))
        if seed is None:
            seed, self.draws = self.draws, self.draws + 1
        try:
            program.check_shapes(state, leaves)
            with torch.random.fork_rng(devices=[]), torch.set_grad_enabled(grad):
                torch.manual_seed(seed)
                return program.run(state, leaves, self.deadline)
        except ProgramError as exc:
            raise GradingFailure(f"{label}: {exc}") from None
        except TimeoutError:
            limit = WorkerTimeout(f"{label} did not finish within the test's {self.timeout:g} s limit")
            self.session.fail(limit)
            raise self._timed_out(limit) from None

    def _result(self, reply: Any) -> Result:
        result = reply.result if isinstance(reply.result, dict) else {"value": reply.result}
        return Result(
            value=result.get("value"),
            input_grads=list(result.get("input_grads") or []),
            param_grads=dict(result.get("param_grads") or {}),
        )

    def call(
        self,
        name: str,
        *args: Any,
        grad_inputs: tuple[int, ...] = (),
        grad_output: Any = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> Result:
        """Call a top-level function of the submission, optionally backward through it."""
        key = (name, signature((tuple(args), dict(kwargs))))
        if key not in self.programs:
            program = self.export(name, name, args, kwargs, None)
            if program is None:
                return self._invoke("call", name, name, args, kwargs, grad_inputs, grad_output, seed)
            self.programs[key] = program
        program = self.programs[key]
        return run_with_grads(self, program, name, dict(program.tensors), set(), args, kwargs, grad_inputs, grad_output, seed)

    def _invoke(
        self,
        op: str,
        target: Any,
        label: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        grad_inputs: tuple[int, ...],
        grad_output: Any,
        seed: int | None,
    ) -> Result:
        """A call or forward answered by the worker: inputs out; the value and gradients back."""
        fields = dict(grad_inputs=list(grad_inputs), grad_output=grad_output, seed=seed)
        return self._result(self._ask(op, target, label, args=list(args), kwargs=kwargs, **fields))

    def value(self, name: str) -> Any:
        """A literal top-level value of the submission, e.g. a hyper-parameter."""
        return self._ask("value", name, name).result

    def build(self, cls: str, *args: Any, seed: int | None = None, **kwargs: Any) -> RemoteModule:
        """Instantiate one of the submission's classes inside the worker."""
        reply = self._ask("build", cls, f"{cls}(...)", args=list(args), kwargs=kwargs, seed=seed)
        return RemoteModule(self, int(reply.result), cls)


class RemoteModule:
    """A module built in the worker, judged here: the runner holds its own copy of the weights (from
    the worker's state_dict, then whatever the test loads) and runs the programs the worker exports."""

    def __init__(self, student: Student, handle: int, cls: str):
        self.student = student
        self.handle = handle
        self.cls = cls
        self.training = True  # a freshly built module is in training mode
        self.state: dict[str, torch.Tensor] | None = None  # state_dict names -> the runner's tensors
        self.extra: dict[str, torch.Tensor] = {}  # constants and non-persistent buffers the programs read
        self.parameters: set[str] = set()
        self.programs: dict[Any, Program | None] = {}  # None: answered by the worker (unverified)

    def _state(self) -> dict[str, torch.Tensor]:
        if self.state is None:
            value = self.student._ask("get_state", self.handle, f"{self.cls}.state_dict").result
            if not isinstance(value, dict) or not all(isinstance(v, torch.Tensor) for v in value.values()):
                raise AssertionError(f"{self.cls}.state_dict() did not return a dict of tensors")
            self.state = {k: v.detach().clone() for k, v in value.items()}
        return self.state

    def program(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Program | None:
        """The program for these inputs in the current mode; its tensors must agree with the weights here."""
        key = (self.training, signature((tuple(args), dict(kwargs))))
        if key not in self.programs:
            label = f"{self.cls}.forward"
            program = self.student.export(self.handle, label, args, kwargs, self.training)
            self.programs[key] = program
            if program is None:
                return None
            state = self._state()
            for spec in program.graph.inputs:
                if spec.kind == "input":
                    continue
                name, tensor = str(spec.target), program.tensors[str(spec.target)]
                if name in state:
                    if state[name].shape != tensor.shape:
                        raise GradingFailure(f"{label}: {name} has shape {tuple(tensor.shape)} in the program, "
                                             f"{tuple(state[name].shape)} in the state_dict")  # fmt: skip
                elif spec.kind == "parameter":
                    raise GradingFailure(f"{label}: the program has a parameter {name} that the state_dict lacks")
                else:
                    self.extra.setdefault(name, tensor.detach().clone())
                if spec.kind == "parameter":
                    self.parameters.add(name)
        return self.programs[key]

    def run(self, args: tuple[Any, ...], kwargs: dict[str, Any], seed: int | None, grad: bool) -> Any:
        """One forward on the runner's weights; buffers the forward writes are kept."""
        program = self.program(args, kwargs)
        if program is None:
            return self.in_worker(args, kwargs, (), None, seed).value
        value, written = self.student.execute(
            program, f"{self.cls}.forward", {**self.extra, **self._state()}, args, kwargs, seed, grad
        )
        for name, tensor in written.items():
            target = self._state() if name in self._state() else self.extra
            target[name] = tensor.detach()
        return value

    def forward(
        self,
        *args: Any,
        grad_inputs: tuple[int, ...] = (),
        grad_output: Any = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> Result:
        label = f"{self.cls}.forward"
        program = self.program(args, kwargs)
        if program is None:
            return self.in_worker(args, kwargs, grad_inputs, grad_output, seed)
        state = {**self.extra, **self._state()}
        return run_with_grads(self.student, program, label, state, self.parameters, args, kwargs, grad_inputs, grad_output, seed)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs).value

    def sync(self) -> None:
        """Give the worker's module the runner's mode and weights."""
        self.student._ask("mode", self.handle, f"{self.cls}.train", args=[self.training])
        if self.state is not None:
            self.student._ask("set_state", self.handle, f"{self.cls}.load_state_dict", args=[self.state])

    def in_worker(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        grad_inputs: tuple[int, ...],
        grad_output: Any,
        seed: int | None,
    ) -> Result:
        """A forward run by the worker on the runner's weights and mode: code the instructor allowed
        to run unverified."""
        self.sync()
        label = f"{self.cls}.forward"
        return self.student._invoke("forward", self.handle, label, args, kwargs, grad_inputs, grad_output, seed)

    def info(self) -> ModuleInfo:
        raw = self.student._ask("params", self.handle, self.cls).result
        return ModuleInfo(
            params=[Param(p["name"], tuple(p["shape"]), bool(p["requires_grad"])) for p in raw["params"]],
            buffers={b["name"]: tuple(b["shape"]) for b in raw["buffers"]},
            modules={m["name"]: m["type"] for m in raw["modules"]},
            shared=int(raw["shared"]),
            training=self.training,
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self._state().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Checked by the worker's strict load_state_dict (its messages name what is missing), kept here."""
        self.student._ask("set_state", self.handle, f"{self.cls}.load_state_dict", args=[state])
        current = self._state()
        self.state = {k: state[k].detach().to(current[k].dtype).clone() if k in current else state[k] for k in state}

    def fit(self, images: torch.Tensor, labels: torch.Tensor, **options: Any) -> torch.Tensor:
        """Train here, with the grader's loop, on the programs of this module, from weights drawn by the
        reference's laws (vitgrade.training.reference_initialization); returns the loss per step.
        Code that cannot be captured (and may run unverified) is trained by the worker, on these weights."""
        info = self.info()
        self.load_state_dict(reference_initialization(self._state(), [p.name for p in info.params], info.modules, int(options["seed"])))
        self.training = False  # the mode the grader's loop trains in (vitgrade.training.train)
        if self.program((images[: int(options["batch_size"])],), {}) is None:
            self.sync()
            reply = self.student._ask("train", self.handle, f"training your {self.cls}", args=[images, labels], kwargs=options)
            self.state = None  # the trained weights are the worker's now
            return reply.result["losses"]  # type: ignore[no-any-return]
        with torch.enable_grad():
            return train(Trainable(self), images, labels, **options)["losses"]  # type: ignore[no-any-return]

    def load_checkpoint(self, data: bytes) -> None:
        """Load checkpoint bytes (e.g. best_model.pth) into this module, weights-only, in the worker; its
        state_dict is then the runner's copy."""
        blob = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        self.student._ask("load_checkpoint", self.handle, f"loading your checkpoint into {self.cls}", args=[blob])
        self.state = None

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return predict(Trainable(self), images, 64)

    def train(self, mode: bool = True) -> RemoteModule:
        self.training = mode
        return self

    def eval(self) -> RemoteModule:
        return self.train(False)


class Trainable:
    """A RemoteModule as the grader's training loop sees a model: parameters that are the runner's
    own leaf tensors, a mode, and a forward that runs the program."""

    def __init__(self, module: RemoteModule):
        self.module = module

    def parameters(self) -> Iterator[torch.Tensor]:
        state = self.module._state()
        names = [p.name for p in self.module.info().params if p.name in state]
        self.module.parameters.update(names)
        for name in names:
            state[name] = state[name].detach().requires_grad_(True)
            yield state[name]

    def train(self, mode: bool = True) -> Trainable:
        self.module.train(mode)
        return self

    def eval(self) -> Trainable:
        return self.train(False)

    def __call__(self, x: torch.Tensor) -> Any:
        return self.module.run((x,), {}, None, torch.is_grad_enabled())


def run_with_grads(
    student: Student,
    program: Program,
    label: str,
    state: dict[str, torch.Tensor],
    parameters: set[str],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    grad_inputs: tuple[int, ...],
    grad_output: Any,
    seed: int | None,
) -> Result:
    """Run a program; with grad_output, backpropagate here and return the gradients of inputs and parameters."""
    grad = grad_output is not None or bool(grad_inputs)
    args = tuple(a.detach().clone().requires_grad_(True) if i in grad_inputs else a for i, a in enumerate(args))
    if grad_output is not None:
        state = {k: v.detach().requires_grad_(True) if k in parameters else v for k, v in state.items()}
    value, _ = student.execute(program, label, state, args, kwargs, seed, grad)
    if grad_output is None:
        return Result(value=detached(value))
    try:
        with torch.enable_grad():
            outputs, grads = pair_outputs(value, grad_output)
            # The same vector-Jacobian product as backward(outputs, grads), which imports sympy to
            # compare the shapes (pair_outputs has): 40 MB in this process.
            torch.autograd.backward(torch.stack([(out * g).sum() for out, g in zip(outputs, grads)]).sum())
    except RuntimeError as exc:
        raise GradingFailure(f"{label}: {exc}") from None
    return Result(
        value=detached(value),
        input_grads=[args[i].grad for i in grad_inputs],
        param_grads={name: state[name].grad for name in sorted(parameters)},
    )


def detached(value: Any) -> Any:
    return pytree.tree_map(lambda v: v.detach() if isinstance(v, torch.Tensor) else v, value)
