"""The public API for test authors: everything a file in test_cases/ needs to import.

    from vitgrade.runner.api import case, expect_close

    @case(unit="sdpa", points=2)
    def test_output(student, fixtures):
        data = fixtures("sdpa_basic")
        out, attn = expect_tensors(student.call("scaled_dot_product_attention", data["q"], ...).value, 2, "...")
        expect_close(out, data["out"], "the output")

Fixtures available to every case: `student` (the submission, in its worker), `source` (the
extracted code, as data, for static checks), `fixtures` (the safetensors files next to the
test), `seed` and `rng` (this run's seed, and a generator derived from it and the test's name),
`checkpoint` (best_model.pth bytes from a zip, or None), `suite_config`, and `reference` in
suites that declare one.
"""

from . import cifar
from .cases import UNITS, VISIBILITIES, case
from .composite import VitConfig, block_check, own_attention, vit_check
from .judge import (
    GradingFailure,
    describe,
    expect,
    expect_close,
    expect_shape,
    expect_tensor,
    expect_tensors,
    inform,
)
from .mistakes import MISTAKES
from .mistakes import candidates as attention_mistakes
from .policy import forbidden_uses
from .probes import patch_token_causes, perturbed, shuffle_patches
from .session import StudentError
from .student import ModuleInfo, RemoteModule, Result, Student
from .tasks import same_pattern_task, training_check_data, training_seeds
from .transplant import KnownMistake, attention_weights, mhsa_mappings, patch_mappings, reference_attention
from .transplant import search as search_transplant

__all__ = [
    "MISTAKES",
    "KnownMistake",
    "attention_mistakes",
    "attention_weights",
    "reference_attention",
    "UNITS",
    "VitConfig",
    "block_check",
    "own_attention",
    "vit_check",
    "same_pattern_task",
    "training_check_data",
    "training_seeds",
    "cifar",
    "forbidden_uses",
    "mhsa_mappings",
    "patch_mappings",
    "patch_token_causes",
    "perturbed",
    "search_transplant",
    "shuffle_patches",
    "VISIBILITIES",
    "GradingFailure",
    "ModuleInfo",
    "RemoteModule",
    "Result",
    "Student",
    "StudentError",
    "case",
    "describe",
    "expect",
    "expect_close",
    "expect_shape",
    "expect_tensor",
    "expect_tensors",
    "inform",
]
