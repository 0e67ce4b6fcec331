"""Forbidden-API policy: the graded units must be written from scratch.

A static scan of the extracted code (trusted side, ast only) finds forbidden APIs and attributes
each use to the unit whose definition holds it; the worker also reports forbidden calls it saw at
run time. The suite's policy then decides what a unit that uses one loses (by default: the
points of its cases marked from_scratch).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from ..protocol import FORBIDDEN_APIS
from ..report.models import TestResult
from ..submission import Chunk

DEFINITION_UNITS = {
    "scaled_dot_product_attention": "sdpa",
    "PatchEmbedding": "patch",
    "MultiHeadSelfAttention": "mhsa",
    "TransformerBlock": "block",
    "VisionTransformer": "vit",
}
UNIT_ORDER = ("sdpa", "patch", "mhsa", "block", "vit")
# By attribute name, whatever module it is reached through (torch._C._nn.scaled_dot_product_attention too).
FORBIDDEN_ATTRS = {api.split(".")[-1]: api for api in FORBIDDEN_APIS}
FORBIDDEN_MODULES = ("timm", "torchvision.models.vision_transformer")
POLICIES = ("from_scratch", "unit", "none")


@dataclass(frozen=True)
class Use:
    api: str
    unit: str  # a unit, or "notebook" for a use outside the graded definitions
    where: str


def forbidden_uses(chunks: list[Chunk]) -> list[Use]:
    """Forbidden APIs referenced in the code, by the unit whose definition holds them."""
    uses: list[Use] = []
    for chunk in chunks:
        tree = ast.parse(chunk.source)
        aliases: dict[str, str] = {}
        for node in tree.body:
            unit = DEFINITION_UNITS.get(getattr(node, "name", ""), "notebook")
            for sub in ast.walk(node):
                api = classify(sub, aliases)
                if api:
                    uses.append(Use(api, unit, f"{chunk.where}, line {getattr(sub, 'lineno', node.lineno)}"))
    return sorted(set(uses), key=lambda u: (u.where, u.api))


def classify(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """The forbidden API a node refers to, recording import aliases on the way."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
        for alias in node.names:
            full = f"{module}.{alias.name}" if module else alias.name
            if full.startswith(FORBIDDEN_MODULES) or (module.startswith("torchvision.models") and alias.name.startswith("vit_")):
                return full
            if alias.name in FORBIDDEN_ATTRS and module.startswith("torch"):
                aliases[alias.asname or alias.name] = FORBIDDEN_ATTRS[alias.name]
                return FORBIDDEN_ATTRS[alias.name]
        return None
    if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRS:
        base = ast.unparse(node.value)
        return None if base in {"self", "cls"} else FORBIDDEN_ATTRS[node.attr]
    if isinstance(node, ast.Name) and node.id in aliases and isinstance(node.ctx, ast.Load):
        return aliases[node.id]
    return None


def runtime_units(seen: dict[str, set[str]]) -> dict[str, set[str]]:
    """Runtime sightings by the definition that was called (label 'Class.forward' etc.), keeping
    each API only at the lowest unit it showed up in, so a block is not blamed for its MHSA."""
    by_unit: dict[str, set[str]] = {}
    for label, apis in seen.items():
        unit = DEFINITION_UNITS.get(label.split(".")[0].split("(")[0].replace("training your ", ""))
        if unit:
            by_unit.setdefault(unit, set()).update(apis)
    kept: dict[str, set[str]] = {}
    for unit in UNIT_ORDER:
        lower = set().union(*(kept.get(u, set()) for u in UNIT_ORDER[: UNIT_ORDER.index(unit)]))
        apis = by_unit.get(unit, set()) - lower
        if apis:
            kept[unit] = apis
    return kept


def apply_forbidden_policy(
    results: list[TestResult],
    from_scratch: list[bool],
    static: list[Use],
    runtime: dict[str, set[str]],
    policy: str,
) -> list[TestResult]:
    """Withhold points of units that use a forbidden API, with an itemized reason in each case."""
    if policy not in POLICIES:
        raise ValueError(f"policy.forbidden must be one of {POLICIES}, not {policy!r}")
    offences: dict[str, list[str]] = {}
    for use in static:
        offences.setdefault(use.unit, []).append(f"{use.api} ({use.where})")
    for unit, apis in runtime.items():
        offences.setdefault(unit, []).extend(f"{api} (called at run time)" for api in sorted(apis))
    if policy == "none":
        return results
    anywhere = [found for unit in sorted(offences) for found in offences[unit]]
    adjusted = []
    for result, scratch in zip(results, from_scratch, strict=True):
        found = anywhere if result.unit == "policy" else offences.get(result.unit)
        if found and result.score > 0 and (scratch or policy == "unit"):
            note = f"points withheld: this unit uses {', '.join(dict.fromkeys(found))}, which the homework forbids"
            result = result.model_copy(update={"score": 0.0, "status": "failed", "output": f"{note}. {result.output}".strip()})
        adjusted.append(result)
    return adjusted
