"""glibc malloc settings of the daemon (controlloop/malloc.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from controlloop import malloc

pytestmark = pytest.mark.skipif(malloc._libc() is None, reason="not glibc")  # noqa: SLF001

# Fragments the heap: 64 KiB blocks (below the mmap threshold, so from the heap), every
# other one freed while its neighbours stay live, so free() cannot shrink the heap's top.
FRAGMENT = textwrap.dedent("""
    import ctypes, sys
    from controlloop.malloc import release_free_memory

    def rss_kib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = []
    for _ in range(4000):  # 250 MiB, every page touched
        p = libc.malloc(64 * 1024)
        ctypes.memset(p, 1, 64 * 1024)
        blocks.append(p)
    for p in blocks[0::2]:
        libc.free(p)
    before = rss_kib()
    released = release_free_memory()
    print(before, rss_kib(), released)
""")


def test_freed_heap_pages_go_back_to_the_kernel() -> None:
    out = subprocess.run([sys.executable, "-c", FRAGMENT], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    before, after, released = int(out[0]), int(out[1]), out[2] == "True"
    assert released
    assert before - after > 100 * 1024, (before, after)  # ~125 MiB of holes handed back


def test_the_arena_cap_yields_to_the_users_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert malloc.limit_arenas() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert malloc.limit_arenas() is True
