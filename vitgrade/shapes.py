"""Output shapes and dtypes of the allowed operators, in plain Python, for the runner's measure pass.

Before a program runs for real, the runner walks it with tensors that have shapes but no data,
to bound every tensor and the total work. torch's meta kernels would do that, but for most of
these operators they are Python references whose first call imports torch._dynamo and sympy:
about 150 MB in the trusted process for a program of a dozen ops. These rules compute the same
shapes and dtypes directly. A rule answers only a well-formed call; for anything else (an
inconsistent call, an unusual overload) it returns None and the caller falls back to the meta
kernel, so errors keep torch's own words. The operators in NATIVE have no rule: their meta
kernels are C++ already.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

NATIVE = frozenset(
    """_assert_tensor_metadata alias chunk expand expand_as flatten movedim narrow permute select slice split
    split_with_sizes squeeze t transpose unbind unflatten unfold unsqueeze view""".split()
)
Rule = Callable[[str, str, list[Any], dict[str, Any]], Any]  # (name, overload, args, kwargs)
RULES: dict[str, Rule] = {}


def infer(op: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The meta output of `aten.NAME.OVERLOAD(*args, **kwargs)`, or None where no rule answers."""
    parts = op.split(".")
    rule = RULES.get(parts[1]) if len(parts) == 3 else None
    if rule is None:
        return None
    try:
        return rule(parts[1], parts[2], args, kwargs)
    except Exception:  # an argument list the rule does not know: the meta kernel judges it
        return None


def rule(*names: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for name in names:
            RULES[name] = fn
        return fn

    return register


def empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(list(shape), dtype=dtype, device="meta")


def broadcast(*shapes: Sequence[int]) -> list[int] | None:
    """torch's broadcasting of shapes, or None where they do not broadcast (torch.broadcast_shapes
    itself imports sympy)."""
    out: list[int] = []
    for sizes in zip(*(([1] * (max(map(len, shapes)) - len(s))) + list(s) for s in shapes)):
        bigger = {s for s in sizes if s != 1}
        if len(bigger) > 1:
            return None
        out.append(bigger.pop() if bigger else 1)
    return out


def _arg(args: list[Any], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _dims(dim: Any, rank: int) -> list[int] | None:
    """Normalized reduction dims; None means all of them."""
    if dim is None or dim == []:
        return None
    dims = [dim] if isinstance(dim, int) else list(dim)
    if any(not -max(rank, 1) <= d < max(rank, 1) for d in dims):
        raise ValueError("dim out of range")
    return sorted({d % max(rank, 1) for d in dims})


def _is_float(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point or dtype.is_complex


def _shape(value: Any) -> list[int]:
    return list(value.shape) if isinstance(value, torch.Tensor) else []


# Same shape and dtype as the first argument.
@rule("abs", "neg", "floor", "relu", "sign", "clone", "contiguous", "detach", "detach_", "alias", "lift_fresh_copy",
      "square", "bitwise_not", "fill", "clamp", "clamp_min", "clamp_max", "dropout", "tril", "triu", "roll", "flip",
      "copy")  # fmt: skip
def _same(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if name.startswith("clamp") and overload.startswith("Tensor"):
        return None  # tensor bounds broadcast with the input
    return empty(args[0].shape, args[0].dtype)


# Same shape; integers become the default float dtype.
@rule("cos", "sin", "erf", "exp", "log", "reciprocal", "rsqrt", "sigmoid", "sqrt", "tanh", "gelu", "silu")
def _floating(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    return empty(x.shape, x.dtype if _is_float(x.dtype) else torch.get_default_dtype())


@rule("logical_not")
def _logical_not(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return empty(args[0].shape, torch.bool)


@rule("softmax", "log_softmax", "_softmax", "_log_softmax")
def _softmax(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, dim = args[0], args[1]
    _dims(dim, x.dim())
    dtype = _arg(args, kwargs, 2, "dtype") if overload == "int" else None
    return empty(x.shape, dtype if isinstance(dtype, torch.dtype) else x.dtype)


@rule("cumsum")
def _cumsum(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, dtype = args[0], _arg(args, kwargs, 2, "dtype")
    _dims(args[1], x.dim())
    return empty(x.shape, dtype or (x.dtype if _is_float(x.dtype) else torch.int64))


COMPARISONS = {"eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or"}


@rule("add", "sub", "mul", "div", "true_divide", "rsub", "pow", "maximum", "minimum", "bitwise_and", "bitwise_or",
      *COMPARISONS)  # fmt: skip
def _binary(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    out = _elementwise(args[0], args[1], torch.bool if name in COMPARISONS else None)
    if out is not None and name in ("div", "true_divide") and _arg(args, kwargs, 2, "rounding_mode") is None and not _is_float(out.dtype):
        return empty(out.shape, torch.get_default_dtype())  # true division of integers
    return out


def _elementwise(a: Any, b: Any, as_dtype: torch.dtype | None) -> torch.Tensor | None:
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        return None
    shape = broadcast(_shape(a), _shape(b))
    if shape is None:
        return None  # torch says why
    return empty(shape, as_dtype or torch.result_type(a, b))


@rule("where")
def _where(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    condition, a, b = args[0], args[1], args[2]
    shape = broadcast(_shape(condition), _shape(a), _shape(b))
    return None if shape is None else empty(shape, torch.result_type(a, b))


@rule("masked_fill")
def _masked_fill(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, mask = args[0], args[1]
    shape = broadcast(x.shape, mask.shape)
    return None if shape is None else empty(shape, x.dtype)


@rule("max", "min")
def _max(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    if overload == "other":
        return _elementwise(x, args[1], None)
    if overload == "default":
        return empty([], x.dtype)
    if overload == "dim":
        values = _reduced(x, args[1], _arg(args, kwargs, 2, "keepdim", False), x.dtype)
        return (values, empty(values.shape, torch.int64))
    return None


def _reduced(x: torch.Tensor, dim: Any, keepdim: bool, dtype: torch.dtype) -> torch.Tensor:
    dims = _dims(dim, x.dim())
    if dims is None:
        dims = list(range(x.dim()))
    shape = [1 if i in dims else s for i, s in enumerate(x.shape)] if keepdim else [s for i, s in enumerate(x.shape) if i not in dims]
    return empty(shape, dtype)


@rule("sum", "mean", "amax", "amin", "any", "all", "argmax", "std", "var")
def _reduction(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x: torch.Tensor = args[0]
    if name in ("sum", "mean"):
        dim, keepdim, dtype = (None, False, _arg(args, kwargs, 1, "dtype")) if overload == "default" else (
            _arg(args, kwargs, 1, "dim"), _arg(args, kwargs, 2, "keepdim", False), _arg(args, kwargs, 3, "dtype"))  # fmt: skip
        integral = x.dtype == torch.bool or not _is_float(x.dtype)
        out = dtype or (torch.int64 if name == "sum" and integral else x.dtype)
    elif name in ("amax", "amin"):
        dim, keepdim, out = _arg(args, kwargs, 1, "dim", []), _arg(args, kwargs, 2, "keepdim", False), x.dtype
    elif name in ("any", "all"):
        dim = None if overload == "default" else _arg(args, kwargs, 1, "dim")
        keepdim, out = _arg(args, kwargs, 2, "keepdim", False), torch.bool
    elif name == "argmax":
        dim, keepdim, out = _arg(args, kwargs, 1, "dim"), _arg(args, kwargs, 2, "keepdim", False), torch.int64
    else:  # std, var: (self, dim=None, *, correction=None, keepdim=False) and the older overloads
        if overload == "default":
            dim, keepdim = None, False
        elif overload == "dim":
            dim, keepdim = args[1], _arg(args, kwargs, 3, "keepdim", False)
        elif overload == "correction":
            dim, keepdim = _arg(args, kwargs, 1, "dim"), kwargs.get("keepdim", False)
        else:
            return None
        out = x.dtype
    return _reduced(x, dim, bool(keepdim), out)


PRODUCTS = {"mm": 2, "addmm": 2, "bmm": 3, "baddbmm": 3}  # the rank of their two factors


@rule(*PRODUCTS)
def _product(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Matrix products, batched or not; addmm and baddbmm add their first argument to the product."""
    added = name in ("addmm", "baddbmm")
    a, b = (args[1], args[2]) if added else (args[0], args[1])
    rank = PRODUCTS[name]
    if a.dim() != rank or b.dim() != rank or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        return None
    shape = [*a.shape[:-1], b.shape[-1]]
    if added and broadcast(_shape(args[0]), shape) != shape:
        return None
    return empty(shape, a.dtype)


def matmul_shape(a: list[int], b: list[int]) -> list[int] | None:
    """torch.matmul's result shape: vectors are promoted to matrices and the added dim removed
    again; batch dims broadcast."""
    if not a or not b:
        return None
    if len(a) == 1 and len(b) == 1:
        return [] if a == b else None
    left = [1, *a] if len(a) == 1 else a
    right = [*b, 1] if len(b) == 1 else b
    batch = broadcast(left[:-2], right[:-2])
    if batch is None or left[-1] != right[-2]:
        return None
    return batch + ([] if len(a) == 1 else [left[-2]]) + ([] if len(b) == 1 else [right[-1]])


@rule("matmul")
def _matmul(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    shape = matmul_shape(_shape(args[0]), _shape(args[1]))
    return None if shape is None else empty(shape, args[0].dtype)


@rule("linear")
def _linear(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, weight, bias = args[0], args[1], _arg(args, kwargs, 2, "bias")
    if x.dim() == 0 or weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        return None
    shape = [*x.shape[:-1], weight.shape[0]]
    if bias is not None and broadcast(_shape(bias), shape) != shape:
        return None
    return empty(shape, x.dtype)


@rule("einsum")
def _einsum(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    equation, operands = args[0].replace(" ", ""), args[1]
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(operands) or not all(isinstance(t, torch.Tensor) for t in operands):
        return None
    sizes: dict[str, int] = {}
    ellipses: list[list[int]] = []
    for term, t in zip(terms, operands):
        letters = term.replace("...", "")
        if not letters.isalpha() or (term.count("...") == 0 and len(letters) != t.dim()) or len(letters) > t.dim():
            return None
        shape = list(t.shape)
        if "..." in term:
            before = term.index("...")
            covered = t.dim() - len(letters)
            ellipses.append(shape[before : before + covered])
            shape = shape[:before] + shape[before + covered :]
        for letter, size in zip(letters, shape):
            known = sizes.get(letter, size)
            if known != size and 1 not in (known, size):
                return None
            sizes[letter] = max(known, size) if 1 in (known, size) else size
    middle = broadcast(*ellipses) if ellipses else []
    if middle is None:
        return None
    if not arrow:
        counts = {c: inputs.count(c) for c in sizes}
        output = ("..." if ellipses else "") + "".join(sorted(c for c, n in counts.items() if n == 1))
    letters = output.replace("...", "")
    if not set(letters) <= set(sizes) or len(set(letters)) != len(letters):
        return None
    shape = [sizes[c] for c in output[: output.index("...")]] + middle + [sizes[c] for c in output[output.index("...") + 3 :]] if "..." in output else [sizes[c] for c in output]  # fmt: skip
    return empty(shape, operands[0].dtype)


@rule("layer_norm", "native_layer_norm")
def _layer_norm(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, normalized = args[0], list(args[1])
    if not normalized or list(x.shape[x.dim() - len(normalized) :]) != normalized or x.dim() < len(normalized):
        return None
    out = empty(x.shape, x.dtype)
    if name == "native_layer_norm":
        stats = [*x.shape[: x.dim() - len(normalized)], *([1] * len(normalized))]
        return (out, empty(stats, x.dtype), empty(stats, x.dtype))
    return out


@rule("native_dropout")
def _native_dropout(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    return (empty(x.shape, x.dtype), empty(x.shape, torch.bool))


def _pair(value: Any, default: int) -> list[int]:
    values = [value] if isinstance(value, int) else list(value if value is not None else [default])
    return values * 2 if len(values) == 1 else values


@rule("conv2d", "convolution")
def _conv2d(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, weight = args[0], args[1]
    if overload != "default" or weight.dim() != 4 or x.dim() not in (3, 4):
        return None
    if name == "convolution":
        stride, padding, dilation, transposed, _, groups = args[3:9]
        if transposed:
            return None
    else:
        stride, padding, dilation, groups = (_arg(args, kwargs, i, n, d) for i, n, d in
                                             ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1), (6, "groups", 1)))  # fmt: skip
    batch: list[int] = [] if x.dim() == 3 else [x.shape[0]]
    channels, height, width = x.shape[-3:]
    if channels != weight.shape[1] * groups or weight.shape[0] % groups:
        return None
    sizes = _windows((height, width), list(weight.shape[2:]), dilation, padding, stride)
    if min(sizes) < 1:
        return None
    return empty([*batch, weight.shape[0], *sizes], x.dtype)


def _windows(sizes: Sequence[int], kernel: Any, dilation: Any, padding: Any, stride: Any) -> list[int]:
    """Output positions of a sliding window along each spatial dim (convolution, unfold)."""
    return [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, d, p, s in
            zip(sizes, _pair(kernel, 1), _pair(dilation, 1), _pair(padding, 0), _pair(stride, 1))]  # fmt: skip


@rule("im2col")
def _im2col(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, kernel, dilation, padding, stride = args[:5]
    if x.dim() not in (3, 4):
        return None
    positions = _windows(x.shape[-2:], kernel, dilation, padding, stride)
    if min(positions) < 1:
        return None
    batch = [] if x.dim() == 3 else [x.shape[0]]
    return empty([*batch, x.shape[-3] * math.prod(_pair(kernel, 1)), math.prod(positions)], x.dtype)


@rule("cat")
def _cat(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    tensors = [t for t in args[0] if list(t.shape) != [0]]  # torch skips legacy empty 1-d tensors
    dim = _arg(args, kwargs, 1, "dim", 0)
    if not tensors:
        return None
    rank = tensors[0].dim()
    d = dim % rank if rank and -rank <= dim < rank else None
    if d is None or any(t.dim() != rank or [s for i, s in enumerate(t.shape) if i != d] != [s for i, s in enumerate(tensors[0].shape) if i != d] for t in tensors):  # fmt: skip
        return None
    shape = list(tensors[0].shape)
    shape[d] = sum(t.shape[d] for t in tensors)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return empty(shape, dtype)


@rule("stack")
def _stack(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    tensors, dim = args[0], _arg(args, kwargs, 1, "dim", 0)
    shape = list(tensors[0].shape)
    if not tensors or any(list(t.shape) != shape for t in tensors) or not -len(shape) - 1 <= dim <= len(shape):
        return None
    shape.insert(dim % (len(shape) + 1), len(tensors))
    return empty(shape, tensors[0].dtype)


@rule("gather")
def _gather(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return empty(args[2].shape, args[0].dtype)


@rule("index_select")
def _index_select(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, dim, index = args[0], args[1], args[2]
    if index.dim() > 1 or x.dim() == 0:
        return None
    shape = list(x.shape)
    shape[dim % x.dim()] = index.numel()
    return empty(shape, x.dtype)


@rule("repeat")
def _repeat(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, repeats = args[0], list(args[1])
    if len(repeats) < x.dim():
        return None
    shape = [1] * (len(repeats) - x.dim()) + list(x.shape)
    return empty([s * r for s, r in zip(shape, repeats)], x.dtype)


@rule("_to_copy", "to", "type_as")
def _convert(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    if overload == "other" or isinstance(_arg(args, kwargs, 1, "other"), torch.Tensor):  # type_as, to.other
        return empty(x.shape, args[1].dtype)
    if overload in ("default", "dtype_layout"):
        dtype = kwargs.get("dtype")
    elif overload == "dtype":
        dtype = _arg(args, kwargs, 1, "dtype")
    elif overload == "device":
        dtype = _arg(args, kwargs, 2, "dtype")
    else:
        return None
    return empty(x.shape, dtype or x.dtype)


def _size(value: Any) -> list[int]:
    sizes = list(value)
    if any(not isinstance(s, int) or s < 0 for s in sizes):
        raise ValueError("negative size")
    return sizes


@rule("zeros", "ones", "empty", "rand", "randn", "full")
def _factory(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if overload not in ("default", "memory_format"):
        return None
    fill = _arg(args, kwargs, 1, "fill_value") if name == "full" else None
    dtype = kwargs.get("dtype") or (torch.bool if isinstance(fill, bool) else torch.int64 if isinstance(fill, int) else torch.get_default_dtype())  # fmt: skip
    return empty(_size(args[0]), dtype)


@rule("zeros_like", "ones_like", "empty_like", "rand_like", "randn_like", "full_like")
def _like(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return empty(args[0].shape, kwargs.get("dtype") or args[0].dtype)


@rule("new_zeros", "new_ones", "new_empty", "new_full")
def _new(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return empty(_size(args[1]), kwargs.get("dtype") or args[0].dtype)


@rule("scalar_tensor")
def _scalar_tensor(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return empty([], kwargs.get("dtype") or torch.get_default_dtype())


@rule("arange")
def _arange(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    bounds = {"default": args[:1], "start": args[:2], "start_step": args[:3]}.get(overload)
    if bounds is None or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
        return None
    start, end, step = (0, bounds[0], 1) if len(bounds) == 1 else (bounds[0], bounds[1], bounds[2] if len(bounds) == 3 else 1)
    if step == 0 or (end - start) * step < 0:
        return None
    integral = all(isinstance(b, int) for b in (start, end, step))
    dtype = kwargs.get("dtype") or (torch.int64 if integral else torch.get_default_dtype())
    return empty([math.ceil((end - start) / step)], dtype)


@rule("reshape", "_unsafe_view")
def _reshape(name: str, overload: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, sizes = args[0], list(args[1])
    if overload != "default" or sizes.count(-1) > 1 or any(s < -1 for s in sizes):
        return None
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if known == 0 or x.numel() % known:
            return None
        sizes[sizes.index(-1)] = x.numel() // known
    return empty(sizes, x.dtype) if math.prod(sizes) == x.numel() else None
