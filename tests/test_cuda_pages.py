"""The pages of torch's CUDA libraries that a grade gives back (vitgrade.pages): most of what their
loading left mapped goes, no page that was written is touched, and torch computes exactly as before."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# In a fresh interpreter: the test process keeps its own mappings as they are.
SCRIPT = r"""
import json, re, torch
from vitgrade.pages import CUDA_FILES, release_cuda_pages

def mapped():
    '''(kB resident in read-only mappings of CUDA files, kB resident in their writable ones)'''
    totals, writable = [0, 0], False
    for line in open("/proc/self/smaps"):
        vma = re.match(r"^[0-9a-f]+-[0-9a-f]+ (\S{4}) \S+ \S+ \S+ *(.*)$", line)
        if vma:
            cuda, writable = any(part in vma[2] for part in CUDA_FILES), "w" in vma[1]
        elif line.startswith("Rss:") and cuda:
            totals[writable] += int(line.split()[1])
    return totals

def compute():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.LayerNorm(64), torch.nn.Linear(64, 4))
    x = torch.randn(16, 32)
    loss = torch.nn.functional.cross_entropy(model(x).softmax(-1) @ torch.randn(4, 4), torch.arange(16) % 4)
    loss.backward()
    return [loss.detach()] + [p.grad for p in model.parameters()]

first, before = compute(), mapped()
dropped = release_cuda_pages()
after = mapped()
again = compute()
print(json.dumps({"before": before, "after": after, "dropped_kb": dropped // 1024,
                  "same": all(torch.equal(a, b) for a, b in zip(first, again))}))
"""


def test_cuda_pages_are_given_back_and_torch_computes_the_same() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    (read_only, writable), (read_only_after, writable_after) = result["before"], result["after"]
    if read_only == 0:
        pytest.skip("this torch maps no CUDA library (a CPU build): nothing to give back")
    assert result["same"], "torch computed differently after the pages were given back"
    assert read_only_after < read_only / 4 and result["dropped_kb"] > 0, result
    assert writable_after == writable, "a page that may have been written was dropped"
