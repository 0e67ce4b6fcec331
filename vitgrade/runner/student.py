"""The `student` fixture: a proxy that turns test code's calls into worker instructions.

Test authors call the student's functions and modules as if they were local, but only data
crosses: names, tensors and numbers go out, tensors and numbers come back. Nothing the worker
returns is executed; results are plain values for the trusted side to judge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .budget import Budget
from .session import WorkerSession, WorkerTimeout


class BudgetExhausted(Exception):
    """The grade's budget ended before or during this test."""


@dataclass
class Result:
    """What one call gave back: the value and, after a backward, the gradients."""

    value: Any
    input_grads: list[torch.Tensor | None] = field(default_factory=list)
    param_grads: dict[str, torch.Tensor | None] = field(default_factory=dict)
    sdpa_calls: list[dict[str, Any]] = field(default_factory=list)


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

    def __init__(self, session: WorkerSession, timeout: float, budget: Budget):
        self.session = session
        self.budget = budget
        self.deadline = min(time.monotonic() + timeout, budget.deadline)
        self.budget_binds = self.deadline == budget.deadline  # the budget, not the test's limit, ends this test
        self.timeout = timeout

    def remaining(self) -> float:
        return max(0.01, self.deadline - time.monotonic())

    def defines(self, name: str) -> bool:
        return name in self.session.ensure().names

    def _ask(self, op: str, target: Any, label: str, **fields: Any) -> Any:
        try:
            return self.session.request(op, target, timeout=self.remaining(), limit=self.timeout, label=label, **fields)
        except WorkerTimeout:
            if not self.budget_binds:
                raise
            self.budget.used_up = True
            raise BudgetExhausted(self.budget.message()) from None

    def _result(self, reply: Any) -> Result:
        result = reply.result if isinstance(reply.result, dict) else {"value": reply.result}
        return Result(
            value=result.get("value"),
            input_grads=list(result.get("input_grads") or []),
            param_grads=dict(result.get("param_grads") or {}),
            sdpa_calls=[call.model_dump() for call in reply.trace],
        )

    def call(
        self,
        name: str,
        *args: Any,
        grad_inputs: tuple[int, ...] = (),
        grad_output: Any = None,
        seed: int | None = None,
        trace: bool = False,
        **kwargs: Any,
    ) -> Result:
        """Call a top-level function of the submission, optionally backward through it."""
        return self._invoke("call", name, name, args, kwargs, grad_inputs, grad_output, seed, trace)

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
        trace: bool,
    ) -> Result:
        """A call or forward: inputs out; the value, gradients and attention trace back."""
        fields = dict(grad_inputs=list(grad_inputs), grad_output=grad_output, seed=seed, trace=trace)
        return self._result(self._ask(op, target, label, args=list(args), kwargs=kwargs, **fields))

    def value(self, name: str) -> Any:
        """A literal top-level value of the submission, e.g. a hyper-parameter."""
        return self._ask("value", name, name).result

    def build(self, cls: str, *args: Any, seed: int | None = None, **kwargs: Any) -> RemoteModule:
        """Instantiate one of the submission's classes inside the worker."""
        reply = self._ask("build", cls, f"{cls}(...)", args=list(args), kwargs=kwargs, seed=seed)
        return RemoteModule(self, int(reply.result), cls)


class RemoteModule:
    """A module that lives in the worker; only its handle is held here."""

    def __init__(self, student: Student, handle: int, cls: str):
        self.student = student
        self.handle = handle
        self.cls = cls

    def forward(
        self,
        *args: Any,
        grad_inputs: tuple[int, ...] = (),
        grad_output: Any = None,
        seed: int | None = None,
        trace: bool = False,
        **kwargs: Any,
    ) -> Result:
        label = f"{self.cls}.forward"
        return self.student._invoke("forward", self.handle, label, args, kwargs, grad_inputs, grad_output, seed, trace)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs).value

    def info(self) -> ModuleInfo:
        raw = self.student._ask("params", self.handle, self.cls).result
        return ModuleInfo(
            params=[Param(p["name"], tuple(p["shape"]), bool(p["requires_grad"])) for p in raw["params"]],
            buffers={b["name"]: tuple(b["shape"]) for b in raw["buffers"]},
            modules={m["name"]: m["type"] for m in raw["modules"]},
            shared=int(raw["shared"]),
            training=bool(raw["training"]),
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        value = self.student._ask("get_state", self.handle, f"{self.cls}.state_dict").result
        if not isinstance(value, dict) or not all(isinstance(v, torch.Tensor) for v in value.values()):
            raise AssertionError(f"{self.cls}.state_dict() did not return a dict of tensors")
        return value

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.student._ask("set_state", self.handle, f"{self.cls}.load_state_dict", args=[state])

    def fit(self, images: torch.Tensor, labels: torch.Tensor, **options: Any) -> torch.Tensor:
        """Train in the worker with the grader's loop; returns the loss per step."""
        reply = self.student._ask("train", self.handle, f"training your {self.cls}", args=[images, labels], kwargs=options)
        return reply.result["losses"]

    def load_checkpoint(self, data: bytes) -> None:
        """Load checkpoint bytes (e.g. best_model.pth) into this module, weights-only, in the worker."""
        blob = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        self.student._ask("load_checkpoint", self.handle, f"loading your checkpoint into {self.cls}", args=[blob])

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.student._ask("predict", self.handle, f"{self.cls} predictions", args=[images]).result

    def train(self, mode: bool = True) -> RemoteModule:
        self.student._ask("mode", self.handle, f"{self.cls}.train", args=[mode])
        return self

    def eval(self) -> RemoteModule:
        return self.train(False)
