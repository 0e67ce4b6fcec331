"""Programs: what the worker exports is data the runner checks and runs itself. Round trips
reproduce eager torch; refused operators, oversized tensors and too much work are stopped before
anything runs; and a worker whose handler is replaced earns what its code earns."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest
import torch

from tests.conftest import failures, grade_all
from tests.corpus.hostile import IMPORT_AT
from tests.corpus.mutants import REFERENCE
from vitgrade.program import MAX_ELEMENTS, Program, ProgramError, capture


def reference():
    spec = importlib.util.spec_from_file_location("program_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def graph(*nodes: dict, inputs: tuple[dict, ...] = (), returns: object = 0) -> dict:
    last = nodes[-1]["name"]
    return {"inputs": list(inputs), "nodes": list(nodes), "outputs": [{"kind": "output", "value": {"node": last}}],
            "returns": returns}  # fmt: skip


X = {"name": "x", "kind": "input", "target": 0}


@pytest.mark.parametrize("training", [False, True])
def test_a_captured_vit_runs_here_as_it_runs_in_torch(training: bool) -> None:
    """The reference ViT exported, parsed and run by the runner gives eager torch's logits and
    gradients (dropout 0, so train mode is deterministic too)."""
    ref = reference()
    torch.manual_seed(0)
    model = ref.VisionTransformer(16, 4, 3, 32, 4, 64, 2, 10, dropout=0.0).train(training)
    x = torch.randn(3, 3, 16, 16)
    data, tensors = capture(model, (x,), {})
    program = Program.parse(data, tensors)
    state = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in tensors.items()}
    program.check_shapes(state, [x])
    value, _ = program.run(state, [x], deadline=None)
    expected = model(x)
    torch.testing.assert_close(value, expected, atol=1e-5, rtol=1e-5)
    value.square().sum().backward()
    expected.square().sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(state[name].grad, param.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_a_function_with_a_mask_returns_its_tuple() -> None:
    ref = reference()

    class Call(torch.nn.Module):
        def forward(self, q, k, v, mask=None):
            return ref.scaled_dot_product_attention(q, k, v, mask)

    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 4)
    mask = torch.rand(5, 7) > 0.3
    mask[:, 0] = True
    program = Program.parse(*capture(Call(), (q, k, v), {"mask": mask}))
    (out, attention), _ = program.run(dict(program.tensors), [q, k, v, mask], deadline=None)
    expected = ref.scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, expected[0])
    assert torch.equal(attention == 0, ~mask.expand(2, 5, 7))


@pytest.mark.parametrize(
    "op, said",
    [
        ("aten.nonzero.default", "nonzero"),  # data-dependent shapes
        ("aten._local_scalar_dense.default", "_local_scalar_dense"),  # .item(): Python sees a value
        ("builtins.open", "builtins.open"),
        ("aten.add_.Tensor", "add_"),  # in place
    ],
)
def test_an_operator_outside_the_allowlist_is_refused_before_it_runs(op: str, said: str) -> None:
    node = {"name": "y", "op": op, "args": [{"node": "x"}], "where": "cell 3, line 4"}
    with pytest.raises(ProgramError, match=f"uses {said}, which the grader does not run.*cell 3, line 4"):
        Program.parse(graph(node, inputs=(X,)), {})


def test_a_huge_tensor_is_refused_on_the_meta_device() -> None:
    """torch.zeros(2**26): refused by shape propagation, nothing allocated."""
    node = {"name": "y", "op": "aten.zeros.default", "args": [[MAX_ELEMENTS * 2]]}
    program = Program.parse(graph(node), {})
    with pytest.raises(ProgramError, match="over the .* elements a program may hold"):
        program.check_shapes({}, [])


def test_too_much_work_is_refused_on_the_meta_device() -> None:
    """Two 4096 x 4096 matrices multiplied: 7e10 multiply-adds, more than a program may ask."""
    node = {"name": "y", "op": "aten.mm.default", "args": [{"node": "x"}, {"node": "x"}]}
    program = Program.parse(graph(node, inputs=(X,)), {})
    with pytest.raises(ProgramError, match="multiply-adds"):
        program.check_shapes({}, [torch.empty(4096, 4096, device="meta")])


@pytest.mark.parametrize(
    "broken, said",
    [
        ({"name": "y", "op": "aten.neg.default", "args": [{"node": "z"}]}, "uses z before it is defined"),
        ({"name": "x", "op": "aten.neg.default", "args": [{"node": "x"}]}, "defined twice"),
        ({"name": "y", "op": "aten.neg.default", "args": [{"node": "x"}], "code": "print(1)"}, "malformed"),
    ],
)
def test_a_malformed_graph_is_refused(broken: dict, said: str) -> None:
    with pytest.raises(ProgramError, match=said):
        Program.parse(graph(broken, inputs=(X,)), {})


BLANK_SDPA = '''
def scaled_dot_product_attention(q, k, v, mask=None):
    raise NotImplementedError("write me")
'''
# At import, from a class body: find the worker and answer every call of scaled_dot_product_attention
# itself, with correct attention computed outside the student's function (the old path believed it).
HIJACK = '''
import gc as _gc
_worker = next(o for o in _gc.get_objects() if type(o).__name__ == "Worker" and hasattr(o, "invoke"))
_invoke = _worker.invoke
def _answer(fn, req, module, _invoke=_invoke):
    if getattr(fn, "__name__", "") != "scaled_dot_product_attention":
        return _invoke(fn, req, module)
    q, k, v = req.args[:3]
    mask = req.args[3] if len(req.args) > 3 else req.kwargs.get("mask")
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    attention = scores.softmax(-1)
    return {"value": (attention @ v, attention)}
_worker.invoke = _answer
'''


def test_a_worker_that_answers_for_its_code_earns_what_its_code_earns(tmp_path: Path) -> None:
    """A blank attention function, with and without a hijacked handler that answers the grader's
    calls correctly: the same score, and no point in the sdpa or mask units."""
    text = REFERENCE.read_text()
    start = text.index("def scaled_dot_product_attention(")
    blank = text[:start] + BLANK_SDPA.lstrip() + text[text.index("\nclass PatchEmbedding"):]
    hijacked = blank.replace(IMPORT_AT, IMPORT_AT + textwrap.indent(HIJACK.strip(), "    ") + "\n", 1)
    (tmp_path / "blank.py").write_text(blank)
    (tmp_path / "hijacked.py").write_text(hijacked)
    jobs = {name: (tmp_path / f"{name}.py", ("--suite", "public")) for name in ("blank", "hijacked")}
    reports = grade_all(jobs, tmp_path / "reports")
    plain, hijack = reports["blank"], reports["hijacked"]
    assert hijack["score"] == plain["score"], failures(hijack)
    for report in (plain, hijack):
        earned = [t for t in report["tests"] if t["unit"] in ("sdpa", "mask") and t["score"] > 0]
        assert earned == [], failures(report)


CAPTURE_BREAKER = "        if float(x.abs().max()) > 1e6:  # runs eagerly; a Python if on a tensor's value\n            x = x / 2\n"
MHSA_FORWARD = "    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:\n"


def test_code_that_runs_but_cannot_be_captured(tmp_path: Path) -> None:
    """An MHSA with a Python `if` on a tensor's value: the report names the line and what to change,
    and costs exactly the tests that run it; with --unverified the worker's word is taken, the
    report says so, and the programs judged are stored under the hashes the report lists."""
    text = REFERENCE.read_text()
    body = text.index(MHSA_FORWARD, text.index("class MultiHeadSelfAttention")) + len(MHSA_FORWARD)
    (tmp_path / "branchy.py").write_text(text[:body] + CAPTURE_BREAKER + text[body:])
    jobs = {
        "strict": (tmp_path / "branchy.py", ("--suite", "public")),
        "unverified": (tmp_path / "branchy.py", ("--suite", "public", "--unverified", "--programs", str(tmp_path / "store"))),
    }
    reports = grade_all(jobs, tmp_path / "reports")
    strict, loose = reports["strict"], reports["unverified"]
    mhsa = [t for t in strict["tests"] if t["unit"] == "mhsa" and "own scaled_dot_product_attention" not in t["name"]]
    assert mhsa and all(t["score"] == 0 for t in mhsa), failures(strict)
    message = mhsa[0]["output"]
    assert "runs, but the grader cannot capture your code as a program" in message, message
    assert "float(x.abs().max())" in message and "no .item(), float()" in message, message
    assert strict["verified"] is True
    assert {t["unit"] for t in strict["tests"] if t["score"] < t["max_score"]} <= {"mhsa", "block", "vit", "train", "policy"}
    assert loose["score"] == loose["max_score"] == 18, failures(loose)
    assert loose["verified"] is False
    assert any("unverified" in d["reason"] and "MultiHeadSelfAttention.forward" in d["reason"] for d in loose["diagnostics"])
    stored = {p.stem for p in (tmp_path / "store").glob("*.json")}
    assert stored == {p["sha256"] for p in loose["programs"]} and len(stored) > 5
