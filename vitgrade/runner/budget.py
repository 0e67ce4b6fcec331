"""The whole grade's time budget: correct code that pauses just under every per-test limit must
not make one grade take forty times the normal time."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Budget:
    deadline: float  # time.monotonic() at which the grade's budget ends
    total_s: float
    used_up: bool = False  # set once a test was cut short or not run because of it

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def message(self) -> str:
        """Why a test was cut short or not run; worded the same in every regrade."""
        return (
            f"not graded: the whole grade's time budget of {self.total_s:g} s was used up by the tests before it"
            " (your code is too slow somewhere: look for the tests that took longest)"
        )
