"""Keep freed host memory in the process instead of handing it back to the OS at once (glibc only).

PyTorch's CPU tensors come from `malloc`. glibc serves a large block (above 128 KiB to 32 MiB, adjusted as blocks
are freed) by a fresh `mmap` and returns it with `munmap` when it is freed, and it trims the heap's free top
beyond a threshold. A dissection allocates and frees blocks of tens of megabytes per batch (the generator's
activations, the counted pixels), so each batch pays the kernel for zeroed pages again. `tune()` raises both
thresholds (`mallopt(M_MMAP_THRESHOLD)` and `mallopt(M_TRIM_THRESHOLD)` to 1 GiB), so such blocks are reused
from the heap. Measured on the world ProGAN on 2 CPU cores (N = 500, layer4, two paired runs): the generator +
segmenter forward took about 15 % less time and the dissection about 20 % less (docs/development.md, "Benchmarks"). The
cost is that the process keeps up to its peak heap after a large job instead of shrinking.

The command line tunes at start, `dissection.dissect` on its first call and `jobs.paint.paint_session` when it
builds a painting session. Set `LIGHTNING_GD_MALLOC=default` to leave the allocator alone (for example inside a
process whose memory must shrink after a dissection).
Setting only one threshold is worse than both: glibc then stops adjusting the mmap threshold and serves every
block above 128 KiB by mmap (measured: the dissection took 1.7× as long).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

ENV = "LIGHTNING_GD_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
THRESHOLD = 1 << 30


@functools.cache
def tune() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if they are raised (now or before).

    Does nothing (False) off glibc, when `LIGHTNING_GD_MALLOC=default`, or if `mallopt` refuses a value."""
    if os.environ.get(ENV, "").strip().lower() in ("default", "0", "off") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the mmap threshold first: with only the trim threshold set, glibc would mmap every block above 128 KiB
    return bool(mallopt(_M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, THRESHOLD))
