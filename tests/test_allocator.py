"""`allocator.tune`: glibc's thresholds raised once per process, so a large tensor comes from the heap instead
of its own mmap; `LIGHTNING_GD_MALLOC=default` leaves them alone."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import torch
from lightning_gd import allocator

def heap_bytes():
    with open("/proc/self/maps") as f:
        return sum(int(b, 16) - int(a, 16) for a, b in
                   (line.split()[0].split("-") for line in f if line.rstrip().endswith("[heap]")))

tuned = allocator.tune()
before = heap_bytes()
x = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, above glibc's largest dynamic mmap threshold (32 MiB)
print(tuned, allocator.tune(), heap_bytes() - before >= 64 << 20)
"""


def _probe(env: dict) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_tune_serves_large_blocks_from_the_heap_and_the_env_opts_out():
    assert _probe({}) == ["True", "True", "True"]  # tuned, idempotent, the 64 MiB block is in the heap
    assert _probe({"LIGHTNING_GD_MALLOC": "default"}) == ["False", "False", "False"]  # its own mmap
