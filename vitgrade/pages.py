"""Give back the pages that loading torch's CUDA libraries reads, in every process that imports torch.

On torch's CUDA build (the x86_64 wheel on PyPI), `import torch` loads cuBLAS, NVRTC, nvJitLink and
the rest, and the loader's reads leave about 250 MiB of their files mapped in each process, while a
grade runs on the CPU and never executes them. Dropping a process's mappings of those pages
(madvise MADV_DONTNEED) leaves them to the kernel's page cache, which may reclaim them. Only
mappings that cannot have been written are dropped (read-only, no anonymous page: each page is
still the file's own), so a page touched later is read back from the file as it was: behaviour
cannot change. Where the call is unavailable (not Linux), nothing happens.
"""

from __future__ import annotations

import ctypes
import re
import sys

MADV_DONTNEED = 4
CUDA_FILES = ("/nvidia/", "/libtorch_cuda", "/libc10_cuda", "/libcaffe2_nvrtc", "/libtorch_nvshmem")
VMA = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+ *(.*)$")


def release_cuda_pages() -> int:
    """Drop this process's mappings of clean pages of CUDA library files; returns the bytes dropped."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        with open("/proc/self/smaps") as smaps:
            lines = smaps.read().splitlines()
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return 0
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    dropped = 0
    candidates: list[tuple[int, int, dict[str, int]]] = []
    current: dict[str, int] | None = None  # the fields of the mapping being read, if it is a candidate
    for line in lines:
        vma = VMA.match(line)
        if vma:
            current = None
            if "w" not in vma[3] and any(part in vma[4] for part in CUDA_FILES):
                current = {}
                candidates.append((int(vma[1], 16), int(vma[2], 16), current))
        elif current is not None and line.endswith(" kB"):
            key, _, value = line.partition(":")
            current[key] = int(value.split()[0])
    for start, end, fields in candidates:
        if fields.get("Anonymous", 1) == 0 and fields.get("Private_Dirty", 1) == 0 and fields.get("Shared_Dirty", 1) == 0:
            if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
                dropped += fields.get("Rss", 0) * 1024
    return dropped
