"""What the worker says about the student's code, graded end to end: a signature that does not
take what the grader passes says how to change it, and forbidden APIs are reported as the
student's only when the student's code called them."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import grade
from tests.corpus.mutants import REFERENCE


def mutant(path: Path, *replacements: tuple[str, str]) -> Path:
    """The reference with each snippet (which must occur exactly once) replaced."""
    text = REFERENCE.read_text()
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def test_a_forward_without_mask_says_to_add_one(tmp_path: Path) -> None:
    blockless = mutant(
        tmp_path / "no_mask.py",
        (
            "    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:\n"
            "        x = x + self.drop(self.attn(self.norm1(x), mask))",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        x = x + self.drop(self.attn(self.norm1(x)))",
        ),
    )
    report = grade(blockless, tmp_path / "report.json")
    called = next(t for t in report["tests"] if t["unit"] == "block" and t["status"] != "passed")
    assert called["status"] == "error", called
    assert "takes 2 positional arguments but 3 were given" in called["output"], called
    assert "add a `mask=None` parameter: forward(self, x, mask=None)" in called["output"], called


def test_torch_calling_sdpa_inside_multihead_attention_is_not_the_students_call(tmp_path: Path) -> None:
    wrapped = mutant(
        tmp_path / "torch_mha.py",
        (
            "        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)\n        self.out = nn.Linear(embed_dim, embed_dim)\n",
            "        self.mha = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)\n",
        ),
        (
            "        B, N, D = x.shape\n        qkv = self.qkv(x)",
            "        return self.mha(x, x, x, need_weights=False)[0]  # torch runs F.scaled_dot_product_attention\n"
            "        B, N, D = x.shape\n        qkv = self.qkv(x)",
        ),
    )
    outputs = " ".join(t["output"] for t in grade(wrapped, tmp_path / "report.json")["tests"] if t["unit"] == "mhsa")
    assert "nn.MultiheadAttention (called at run time)" in outputs, outputs
    assert "F.scaled_dot_product_attention" not in outputs, outputs


def test_a_parameter_name_with_a_lone_surrogate_is_reported_not_fatal(tmp_path: Path) -> None:
    surrogate = mutant(
        tmp_path / "surrogate.py",
        (
            "        self.out = nn.Linear(embed_dim, embed_dim)\n",
            '        self.out = nn.Linear(embed_dim, embed_dim)\n        setattr(self, "w\\ud83d", nn.Parameter(torch.zeros(1)))\n',
        ),
    )
    report = grade(surrogate, tmp_path / "report.json")  # exits 0 and writes the report
    named = [t for t in report["tests"] if "w\\ud83d" in t["output"]]
    assert named and all(
        t["status"] == "error" and "is not a usable name (printable parts joined by dots)" in t["output"] for t in named
    )


def test_the_worker_captures_without_the_packages_a_cpu_capture_never_uses(tmp_path: Path) -> None:
    """triton and redis, which torch.export imports on torch's CUDA build, stay out of the worker (the
    largest process of a grade, ~80 MiB smaller without them), and torch's warning that triton is
    missing does not reach the student's output. The student's code runs after the worker's first capture."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        REFERENCE.read_text() + "\nimport sys\n\n\nclass Probe:  # a class body runs when the worker loads the code\n"
        '    print("LOADED", sorted({m.split(".")[0] for m, v in sys.modules.items() if v} & {"triton", "redis"}))\n'
    )
    report = grade(probe, tmp_path / "report.json")
    printed = report["student_output"]["text"]
    assert "LOADED []" in printed, printed
    assert "triton not found" not in printed, printed
    assert report["score"] == report["max_score"], report["score"]
