"""Keep freed memory in the process's heap instead of handing it back to the OS (glibc's malloc).

By default glibc serves large blocks by ``mmap`` (above a threshold that adapts to the largest block
freed so far, up to 32 MiB) and returns the heap's free top to the OS once it exceeds a second
threshold; memory freed in a burst is then page-faulted back in by the next allocations. A shard
stream's worker frees its shuffle window of raw samples at once, and a batch's image arrays; on
336 px LLaVA samples that cost ~300 page faults a sample (~0.3 ms, 4% of it), 0-4 with this setting
(``tools/bench_data.py``); a training step frees its activations likewise, and the benchmarks'
variants would pay for each other's frees. Fixing both thresholds high keeps the heap at the
process's peak and reuses it: the process holds what it needed at its peak, nothing more.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap
TRIM_THRESHOLD = (1 << 31) - 1  # the heap's free top is never handed back


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process (and the processes it forks later); False where the
    C library is not glibc (macOS, musl), which has nothing to set."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
