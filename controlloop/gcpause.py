"""``gc_paused()``: the cyclic garbage collector off around a burst of acyclic allocations."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block; re-enable it after if it was on.

    Loading a 3,000-server config and sizing it allocate ~100,000 objects without cycles
    (parsed JSON, specs, candidates); each collector pass walks all of them, which was
    15-25 % of ``optimize``'s time. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
