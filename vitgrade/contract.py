"""The two contracts an instructor can grade against, and the units each one has.

`edition` is vitgrade's notebook (student_template/): a standalone
`scaled_dot_product_attention` and masks on MHSA and the block. `course` is the course's own
notebook as handed out (student_template/course): the four classes, `forward(self, x)`, no
attention function and no masks; attention is graded through MHSA. The contract is the
instructor's choice, never guessed from a submission.
"""

from __future__ import annotations

from typing import Literal, get_args

UNITS = ("sdpa", "mask", "patch", "mhsa", "block", "vit", "train", "policy")
Contract = Literal["edition", "course"]
CONTRACTS: tuple[Contract, ...] = get_args(Contract)
DEFAULT_CONTRACT: Contract = "edition"
# The units whose modules a unit's module is built of, where the unit's reference check composes
# the student's own parts (vitgrade.runner.composite): a property of the whole that fails because
# a part is wrong costs points in that part's unit, not here (vitgrade.runner.scoring).
PARTS = {"block": ("mhsa",), "vit": ("patch", "mhsa", "block")}
CONTRACT_UNITS: dict[Contract, tuple[str, ...]] = {
    "edition": UNITS,
    "course": ("patch", "mhsa", "block", "vit", "train", "policy"),
}
