"""Weight transplant by search: map the reference's weights onto a student's parameters.

A correct MHSA or patch embedding can be parameterized in many valid ways (fused or separate
q/k/v, head-major or role-major layouts, per-head projections, with or without bias, Conv2d or
Linear over (C, p, p) or (p, p, C) pixels). From the student's parameter names and shapes we
enumerate the mappings the shapes allow; a test loads each into the student's module and passes
when one reproduces the reference output. A buggy module matches none of them.

The reference side is described by roles: q, k, v, o for attention (each a D x D weight and a D
bias, heads in blocks of D // heads rows) and `patch` for the patch projection.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .judge import GradingFailure
from .mistakes import MISTAKES
from .student import ModuleInfo, RemoteModule

ROLE_HINTS = {
    "q": {"q", "query", "queries", "wq", "to_q", "q_proj", "w_q", "qs"},
    "k": {"k", "key", "keys", "wk", "to_k", "k_proj", "w_k", "ks"},
    "v": {"v", "value", "values", "wv", "to_v", "v_proj", "w_v", "vs"},
    "o": {"o", "out", "proj", "projection", "output", "out_proj", "wo", "w_o", "to_out", "fc", "fc_out", "dense", "o_proj"},
}
MAX_CANDIDATES = 400  # layouts tried in the worker
MAX_EXAMINED = 200_000  # assignments looked at on the trusted side: the search is bounded, whatever the module


@dataclass
class Group:
    """A linear-like parameter group: a 2-D weight (out, in) and an optional bias."""

    weight: str
    shape: tuple[int, ...]
    bias: str | None
    transposed: bool = False  # a raw (in, out) matrix used as x @ W

    @property
    def rows(self) -> int:
        return self.shape[1] if self.transposed else self.shape[0]

    @property
    def tokens(self) -> set[str]:
        return set(re.split(r"[._]", self.weight.lower())) | {self.weight.lower().rsplit(".", 1)[0].split(".")[-1]}


@dataclass
class Mapping:
    """One way to lay the reference weights onto the student's parameters."""

    description: str
    # student parameter name -> (roles in row order, per-head slicing spec) resolved by `build`
    pieces: dict[str, list[tuple[str, int | None]]] = field(default_factory=dict)
    transposed: set[str] = field(default_factory=set)
    biasless: set[str] = field(default_factory=set)  # roles whose reference bias must be zero
    reshape: dict[str, str] = field(default_factory=dict)  # patch: student weight layout

    def build(self, ref: dict[str, torch.Tensor], heads: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        """Student state updates from reference weights `ref` ({role}.weight / {role}.bias)."""
        out: dict[str, torch.Tensor] = {}
        for name, pieces in self.pieces.items():
            kind = "bias" if name.endswith("bias") and len(shapes[name]) == 1 else "weight"
            blocks = []
            for role, head in pieces:
                tensor = ref[f"{role}.{kind}"]
                if head is not None:
                    size = tensor.shape[0] // heads
                    tensor = tensor[head * size : (head + 1) * size]
                blocks.append(tensor)
            value = torch.cat(blocks) if len(blocks) > 1 else blocks[0]
            if name in self.reshape:
                value = patch_layout(value, self.reshape[name], shapes[name])
            if name in self.transposed:
                value = value.t()
            out[name] = value.reshape(shapes[name]).clone()
        return out


def patch_layout(weight: torch.Tensor, layout: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A (D, C, p, p) conv kernel as the student's weight: conv, (C,p,p) or (p,p,C) flattening."""
    if layout == "conv":
        return weight
    if layout == "cpp":
        return weight.reshape(weight.shape[0], -1)
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)  # "ppc"


def linear_groups(info: ModuleInfo, in_features: int) -> list[Group]:
    """Weights that consume `in_features` and their biases, in registration order."""
    by_name = {p.name: p.shape for p in info.params}
    groups = []
    for name, shape in by_name.items():
        if len(shape) != 2:
            continue
        prefix = name.rsplit(".", 1)[0] if "." in name else ""
        bias_name = f"{prefix}.bias" if prefix else "bias"
        if name.endswith("weight") and shape[1] == in_features:
            bias = bias_name if by_name.get(bias_name) == (shape[0],) else None
            groups.append(Group(name, shape, bias))
        elif not name.endswith("weight") and shape[0] == in_features:
            groups.append(Group(name, shape, None, transposed=True))
    return groups


def hinted_roles(group: Group) -> list[str]:
    hits = [role for role, hints in ROLE_HINTS.items() if group.tokens & hints]
    return hits if len(hits) == 1 else []


def mhsa_mappings(info: ModuleInfo, dim: int, heads: int) -> Iterator[Mapping]:
    """Every assignment of q/k/v/o (per head where needed) to the student's linear groups."""
    head_dim = dim // heads
    groups = linear_groups(info, dim)
    rows = sum(g.rows for g in groups)
    if groups and rows != 4 * dim:
        names = ", ".join(f"{g.weight} {g.shape}" for g in groups[:20])
        raise GradingFailure(
            f"MultiHeadSelfAttention({dim}, {heads}) has {len(groups)} weight matrices that read the {dim}-wide input "
            f"({names}), {rows} output rows in all; the homework's q, k, v and output projections have {4 * dim}: "
            "keep only those (no extra layers inside the attention), so the grader can load the reference weights"
        )
    options = [group_options(g, dim, heads, head_dim) for g in groups]
    count = 0
    for examined, choice in enumerate(itertools.product(*options)):
        if examined >= MAX_EXAMINED:
            return
        covered: list[tuple[str, int]] = []
        for pieces in choice:
            covered += [(role, h) for role, hh in pieces for h in ([hh] if hh is not None else range(heads))]
        if sorted(covered) != sorted((r, h) for r in "qkvo" for h in range(heads)):
            continue
        mapping = Mapping(description=", ".join(f"{g.weight}={describe_pieces(p)}" for g, p in zip(groups, choice)))
        for group, pieces in zip(groups, choice):
            mapping.pieces[group.weight] = list(pieces)
            if group.transposed:
                mapping.transposed.add(group.weight)
            if group.bias:
                mapping.pieces[group.bias] = list(pieces)
            else:
                mapping.biasless.update(role for role, _ in pieces)
        yield mapping
        count += 1
        if count >= MAX_CANDIDATES:
            return


def attention_weights(dim: int, rng: torch.Generator, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Fresh reference weights by role: q, k, v, o, each a (D, D) weight of scale / sqrt(D) and a small bias."""
    weights = {}
    for role in "qkvo":
        weights[f"{role}.weight"] = torch.randn(dim, dim, generator=rng) * scale / dim**0.5
        weights[f"{role}.bias"] = torch.randn(dim, generator=rng) * 0.1
    return weights


def reference_attention(reference: Any, dim: int, heads: int, x: torch.Tensor) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """weights by role -> the reference MHSA's output on x (reference/vit.py fuses q, k, v as `qkv`;
    its output projection is `out`)."""
    module = reference.MultiHeadSelfAttention(dim, heads)

    def expected(w: dict[str, torch.Tensor]) -> torch.Tensor:
        module.load_state_dict({
            "qkv.weight": torch.cat([w[f"{r}.weight"] for r in "qkv"]),
            "qkv.bias": torch.cat([w[f"{r}.bias"] for r in "qkv"]),
            "out.weight": w["o.weight"],
            "out.bias": w["o.bias"],
        })  # fmt: skip
        with torch.no_grad():
            return module(x)  # type: ignore[no-any-return]

    return expected


def describe_pieces(pieces: tuple[tuple[str, int | None], ...]) -> str:
    return "+".join(role if head is None else f"{role}[head {head}]" for role, head in pieces)


def group_options(group: Group, dim: int, heads: int, head_dim: int) -> list[tuple[tuple[str, int | None], ...]]:
    """The row layouts a group of this height can hold, hinted roles first."""
    rows = group.rows
    hinted = hinted_roles(group)
    options: list[tuple[tuple[str, int | None], ...]] = []
    for size in (3, 2, 1):
        if rows != size * dim:
            continue
        roles = "qkv" if size > 1 else "qkvo"
        for combo in itertools.permutations(roles, size):
            if size == 1 and hinted and combo[0] not in hinted:
                continue
            options.append(tuple((r, None) for r in combo))  # role-major: [q; k; v], heads inside
            if size > 1:
                options.append(tuple((r, h) for h in range(heads) for r in combo))  # head-major
    for size in (3, 1):
        if rows == size * head_dim and head_dim != dim:
            index = [int(n) for n in re.findall(r"\d+", group.weight)]
            head_choices = [index[-1]] if index and index[-1] < heads else list(range(heads))
            for h in head_choices:
                for combo in itertools.permutations("qkv", size):
                    if size == 1 and hinted and combo[0] not in hinted:
                        continue
                    options.append(tuple((r, h) for r in combo))
    return options


def patch_mappings(info: ModuleInfo, dim: int, channels: int, patch: int) -> Iterator[Mapping]:
    """The patch projection as a Conv2d kernel, or a Linear over (C, p, p) or (p, p, C) pixels."""
    by_name = {p.name: p.shape for p in info.params}
    pixels = channels * patch * patch
    for name, shape in by_name.items():
        prefix = name.rsplit(".", 1)[0] if "." in name else ""
        bias = f"{prefix}.bias" if prefix else "bias"
        has_bias = by_name.get(bias) == (dim,)
        layouts: list[tuple[str, bool]] = []
        if shape == (dim, channels, patch, patch):
            layouts = [("conv", False)]
        elif shape == (dim, pixels):
            layouts = [("cpp", False), ("ppc", False)]
        elif shape == (pixels, dim) and not name.endswith("weight"):
            layouts = [("cpp", True), ("ppc", True)]
        for layout, transposed in layouts:
            mapping = Mapping(description=f"{name} as {layout}{' (transposed)' if transposed else ''}")
            mapping.pieces[name] = [("patch", None)]
            mapping.reshape[name] = layout
            if transposed:
                mapping.transposed.add(name)
            if has_bias:
                mapping.pieces[bias] = [("patch", None)]
            else:
                mapping.biasless.add("patch")
            yield mapping


def zero_biases(ref: dict[str, torch.Tensor], roles: set[str]) -> dict[str, torch.Tensor]:
    """The reference weights with the biases of `roles` zeroed: a student without bias matches these."""
    return {k: (torch.zeros_like(t) if k.endswith(".bias") and k.split(".")[0] in roles else t) for k, t in ref.items()}


class KnownMistake(GradingFailure):
    """The module reproduces attention with one of vitgrade.runner.mistakes: `name` says which."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


def search(
    module: RemoteModule,
    mappings: Iterator[Mapping],
    ref: dict[str, torch.Tensor],
    heads: int,
    inputs: tuple[torch.Tensor, ...],
    expected: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    what: str,
    atol: float = 1e-4,
    mistakes: dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]] | None = None,
    goal: str = "the reference output",
) -> str:
    """Try each mapping in the worker (in eval mode: no dropout); return the one that reproduces
    `expected` (GOAL, in messages). Else, where one reproduces one of MISTAKES (weights -> output), raise
    KnownMistake naming its cause; else fail."""
    module.eval()
    base = module.state_dict()
    shapes = {name: tuple(t.shape) for name, t in base.items()}
    tried, best = 0, (float("inf"), "")
    outputs: list[tuple[str, dict[str, torch.Tensor], torch.Tensor]] = []
    for mapping in mappings:
        weights = zero_biases(ref, mapping.biasless)
        update = mapping.build(weights, heads, shapes)
        module.load_state_dict({**base, **{k: v.to(base[k].dtype) for k, v in update.items()}})
        actual = module(*inputs)
        target = expected(weights)
        tried += 1
        if isinstance(actual, torch.Tensor) and actual.shape == target.shape:
            error = float((actual.double() - target.double()).abs().max())
            if error <= atol:
                return mapping.description
            best = min(best, (error, mapping.description))
            outputs.append((mapping.description, weights, actual))
    for name, mistaken in (mistakes or {}).items():
        for description, weights, actual in outputs:
            target = mistaken(weights)
            if actual.shape == target.shape and float((actual.double() - target.double()).abs().max()) <= atol:
                raise KnownMistake(f"{what}: {MISTAKES[name].cause} (with the reference's weights loaded as "
                                   f"{description}, your output is exactly that)", name)  # fmt: skip
    params = ", ".join(f"{n} {tuple(t.shape)}" for n, t in base.items())
    if not tried:
        raise GradingFailure(
            f"{what}: none of your parameters ({params}) has a shape that can hold the reference's weights"
        )
    closest = f"; the closest ({best[1]}) is off by up to {best[0]:.3g}" if best[1] else ""
    raise GradingFailure(
        f"{what}: loading the reference weights into your parameters ({params}) in any of the {tried} "
        f"layouts they allow does not reproduce {goal}{closest}"
    )
