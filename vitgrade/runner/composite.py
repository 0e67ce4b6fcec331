"""Anchors for the composite units: a TransformerBlock (or a VisionTransformer) must compute what
its own parts compute when wired as the homework says; and, in the edition, an MHSA must compute
its heads with the student's own attention function.

The trusted side reads the module's structure (which submodule is the student's
MultiHeadSelfAttention, PatchEmbedding or TransformerBlock, which parameters are LayerNorms, MLP,
class token, positions and head), builds each student part standalone in the worker with the same
weights, and wires the parts itself: pre- or post-norm, either LayerNorm first, a final norm or
none. The unit passes when its output equals one of these wirings. A part's own bug therefore
stays in the part's unit (the block is judged with the student's MHSA as it is), while code that
skips, replaces or fakes the wiring (blocks never called, constant logits, an MLP stack with no
attention, an identity block) cannot pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .judge import GradingFailure, describe, expect_tensors
from .mistakes import project
from .probes import perturbed
from .student import ModuleInfo, RemoteModule, Student

ATOL, RTOL = 1e-4, 1e-4
# The homework leaves the MLP's nonlinearity open; these are the ones students use.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "GELU": F.gelu,
    "GELU (tanh)": lambda t: F.gelu(t, approximate="tanh"),
    "ReLU": F.relu,
    "SiLU": F.silu,
}


@dataclass
class Linear:
    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def of_type(info: ModuleInfo, suffix: str) -> list[str]:
    """Submodule names whose class is named SUFFIX (the student's own class or torch's)."""
    return [name for name, kind in info.modules.items() if name and kind.rsplit(".", 1)[-1] == suffix]


def under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}


def part(student: Student, cls: str, args: tuple[object, ...], state: dict[str, torch.Tensor], where: str) -> RemoteModule:
    """The student's CLS, built standalone in the worker with the weights of submodule WHERE."""
    module = student.build(cls, *args, seed=0)
    try:
        module.load_state_dict(state)
    except Exception as exc:  # a StudentError: the standalone part has other parameters
        raise GradingFailure(
            f"your {cls}{args} has other parameters than the {cls} at `{where}` inside the model "
            f"({str(exc)[:200]}): build that submodule with the same arguments the homework gives"
        ) from None
    return module.eval()


def layer_norm(state: dict[str, torch.Tensor], name: str, dim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    weight, bias = state.get(f"{name}.weight"), state.get(f"{name}.bias")
    return lambda x: F.layer_norm(x, (dim,), weight, bias)


def closest(actual: torch.Tensor, candidates: dict[str, torch.Tensor]) -> tuple[str, float]:
    """The wiring closest to ACTUAL and its largest absolute error (inf where shapes differ)."""
    errors = {
        name: float((actual - c).abs().max()) if c.shape == actual.shape else math.inf for name, c in candidates.items()
    }
    best = min(errors, key=lambda n: errors[n])
    return best, errors[best]


def matches(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return actual.shape == expected.shape and bool(torch.allclose(actual, expected, atol=ATOL, rtol=RTOL))


def mlp_of(info: ModuleInfo, state: dict[str, torch.Tensor], skip: list[str], dim: int, hidden: int) -> tuple[Linear, Linear]:
    """The block's MLP: the D -> mlp_dim and mlp_dim -> D linear layers among the parameters that are
    neither attention nor LayerNorm."""
    rest = {p.name: p.shape for p in info.params if not under(p.name.rsplit(".", 1)[0], skip)}
    up = [n for n, s in rest.items() if s == (hidden, dim)]
    down = [n for n, s in rest.items() if s == (dim, hidden)]
    if len(up) != 1 or len(down) != 1:
        raise GradingFailure(
            f"TransformerBlock(embed_dim={dim}, ..., mlp_dim={hidden}) should hold an MLP {dim} -> {hidden} -> {dim} "
            f"beside its attention and two LayerNorms; its other parameters are {sorted(rest.items())}"
        )
    layers = []
    for weight in (up[0], down[0]):
        bias = weight.rsplit(".", 1)[0] + ".bias"
        layers.append(Linear(state[weight], state.get(bias) if bias in rest else None))
    extra = set(rest) - {up[0], down[0]} - {w.rsplit(".", 1)[0] + ".bias" for w in (up[0], down[0])}
    if extra:
        raise GradingFailure(f"TransformerBlock has parameters the homework's block does not: {sorted(extra)}")
    return layers[0], layers[1]


def block_wirings(
    x: torch.Tensor,
    attention: Callable[[torch.Tensor], torch.Tensor],
    norms: tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]],
    up: Linear,
    down: Linear,
) -> dict[str, torch.Tensor]:
    """Every wiring of a block the homework allows, computed here from the student's parts."""
    out = {}
    attended = attention(x)
    for act_name, act in ACTIVATIONS.items():
        mlp = lambda t, act=act: down(act(up(t)))  # noqa: E731
        for order, (n1, n2) in (("", norms), (", second LayerNorm first", norms[::-1])):
            h = x + attention(n1(x))
            out[f"pre-norm, {act_name}{order}"] = h + mlp(n2(h))
            h = n1(x + attended)
            out[f"post-norm, {act_name}{order}"] = n2(h + mlp(h))
    return out


def own_attention(student: Student, x: torch.Tensor, heads: int) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """weights by role -> MHSA on x computed here from those projections and the program of the
    student's own scaled_dot_product_attention, on per-head q, k, v (B, heads, N, D / heads)."""
    B, N, D = x.shape

    def expected(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        q, k, v = (project(x, weights, r).reshape(B, N, heads, D // heads).transpose(1, 2) for r in "qkv")
        out, _ = expect_tensors(student.call("scaled_dot_product_attention", q, k, v).value, 2, "scaled_dot_product_attention(q, k, v)")
        return project(out.transpose(1, 2).reshape(B, N, D), weights, "o")

    return expected


def block_check(student: Student, dim: int, heads: int, hidden: int, x: torch.Tensor, seed: int) -> None:
    """TransformerBlock(dim, heads, hidden, 0.0)(x) equals x + MHSA(LN(x)), then + MLP(LN(.)),
    pre- or post-norm, computed with the student's own MultiHeadSelfAttention and weights."""
    block = student.build("TransformerBlock", dim, heads, hidden, 0.0, seed=0)
    block.load_state_dict(perturbed(block.state_dict(), seed=seed, scale=0.2))
    block.eval()
    info, state = block.info(), block.state_dict()
    attn = of_type(info, "MultiHeadSelfAttention")
    norms = [n for n in of_type(info, "LayerNorm") if not under(n, attn)]
    if len(attn) != 1:
        raise GradingFailure(f"TransformerBlock should hold one MultiHeadSelfAttention (yours); it holds {len(attn)}")
    if len(norms) != 2:
        raise GradingFailure(f"TransformerBlock should hold two nn.LayerNorm(embed_dim); it holds {norms or 'none'}")
    up, down = mlp_of(info, state, [*attn, *norms], dim, hidden)
    oracle = part(student, "MultiHeadSelfAttention", (dim, heads), sub_state(state, attn[0]), attn[0])
    cache: dict[int, torch.Tensor] = {}

    def attention(t: torch.Tensor) -> torch.Tensor:
        key = hash(t.numpy().tobytes())
        if key not in cache:
            cache[key] = oracle(t)
        return cache[key]

    wirings = block_wirings(x, attention, (layer_norm(state, norms[0], dim), layer_norm(state, norms[1], dim)), up, down)
    actual = block(x)
    if not isinstance(actual, torch.Tensor) or not any(matches(actual, w) for w in wirings.values()):
        raise GradingFailure(mismatch("TransformerBlock", actual, wirings, describe(x=x),
                                      "x + attention(LayerNorm(x)), then + MLP(LayerNorm(.)) (pre-norm), "
                                      "or the post-norm order; check the residual connections and where the norms go"))  # fmt: skip


def mismatch(what: str, actual: object, wirings: dict[str, torch.Tensor], fed: str, hint: str) -> str:
    if not isinstance(actual, torch.Tensor):
        return f"{what} should return a tensor for inputs {fed}; yours returned {type(actual).__name__}"
    best, error = closest(actual, wirings)
    shape = tuple(next(iter(wirings.values())).shape)
    if error == math.inf:
        return f"{what} output should have shape {shape} for inputs {fed}; yours has {tuple(actual.shape)}"
    return (
        f"{what} output does not equal what its own parts compute when wired as the homework says ({hint}); "
        f"closest: {best}, off by up to {error:.3g} (tolerance {ATOL:g}) for inputs {fed}"
    )


@dataclass(frozen=True)
class VitConfig:
    image_size: int
    patch_size: int
    in_channels: int
    embed_dim: int
    num_heads: int
    mlp_dim: int
    num_layers: int
    num_classes: int

    def args(self) -> tuple[int, ...]:
        return (self.image_size, self.patch_size, self.in_channels, self.embed_dim, self.num_heads, self.mlp_dim,
                self.num_layers, self.num_classes)  # fmt: skip


def vit_check(student: Student, config: VitConfig, images: torch.Tensor, seed: int) -> None:
    """VisionTransformer(...)(images) equals head(LayerNorm?(blocks([cls; PatchEmbedding(images)] + pos))[:, 0]),
    computed with the student's own PatchEmbedding and TransformerBlocks and its weights."""
    c = config
    model = student.build("VisionTransformer", *c.args(), 0.0, seed=0)
    model.load_state_dict(perturbed(model.state_dict(), seed=seed, scale=0.2))
    model.eval()
    info, state = model.info(), model.state_dict()
    patches, blocks = of_type(info, "PatchEmbedding"), of_type(info, "TransformerBlock")
    if len(patches) != 1:
        raise GradingFailure(f"VisionTransformer should hold one PatchEmbedding (yours); it holds {len(patches)}")
    if len(blocks) != c.num_layers:
        raise GradingFailure(
            f"VisionTransformer(..., num_layers={c.num_layers}, ...) should hold {c.num_layers} TransformerBlocks "
            f"(yours); it holds {len(blocks)}"
        )
    parts = [*patches, *blocks]
    rest = {p.name: p.shape for p in info.params if not under(p.name.rsplit(".", 1)[0], parts)}
    count = (c.image_size // c.patch_size) ** 2
    cls = [n for n, s in rest.items() if s == (1, 1, c.embed_dim)]
    pos = [n for n, s in rest.items() if s in {(1, count + 1, c.embed_dim), (1, count, c.embed_dim)}]
    head = [n for n, s in rest.items() if s == (c.num_classes, c.embed_dim)]
    final_norms = [n for n in of_type(info, "LayerNorm") if not under(n, parts)]
    if len(head) != 1:
        raise GradingFailure(f"VisionTransformer should end in one Linear(embed_dim, num_classes); its own parameters are {sorted(rest.items())}")
    head_bias = head[0].rsplit(".", 1)[0] + ".bias"
    classify = Linear(state[head[0]], state.get(head_bias) if head_bias in rest else None)
    norm = layer_norm(state, final_norms[0], c.embed_dim) if len(final_norms) == 1 else (lambda t: t)
    patch = part(student, "PatchEmbedding", (c.image_size, c.patch_size, c.in_channels, c.embed_dim), sub_state(state, patches[0]), patches[0])
    layers = [part(student, "TransformerBlock", (c.embed_dim, c.num_heads, c.mlp_dim, 0.0), sub_state(state, b), b) for b in blocks]
    tokens = patch(images)
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3:
        raise GradingFailure("your PatchEmbedding did not return (B, N, D) tokens inside the ViT; see the patch unit")
    if len(cls) == 1 and len(pos) == 1:
        p = state[pos[0]]
        start = torch.cat([state[cls[0]].expand(len(images), -1, -1), tokens + (p if p.shape[1] == count else 0)], dim=1)
        start = start + (p if p.shape[1] == count + 1 else 0)
    elif not cls and tokens.shape[1] == count + 1:
        start = tokens  # the class token and positions are added inside PatchEmbedding (the patch unit says so)
    else:
        raise GradingFailure(
            f"VisionTransformer should have a class token (1, 1, {c.embed_dim}) and positional embeddings "
            f"(1, {count + 1}, {c.embed_dim}); its own parameters are {sorted(rest.items())}"
        )
    t = start
    for layer in layers:
        t = layer(t)
    expected = classify(norm(t)[:, 0])
    actual = model(images)
    wiring = {"[cls; patches] + positions -> blocks -> " + ("LayerNorm -> " if final_norms else "") + "head(class token)": expected}
    if not isinstance(actual, torch.Tensor) or not matches(actual, expected):
        raise GradingFailure(mismatch("VisionTransformer", actual, wiring, describe(images=images),
                                      "prepend the class token, add the positions, run every block in order, "
                                      "classify the class token"))  # fmt: skip
