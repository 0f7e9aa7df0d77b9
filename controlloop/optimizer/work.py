"""How much sizing work a system asks for, before any is done (admission control).

The sizing evaluates one birth-death chain per (server, accelerator) pair; its memory
and time grow with the pairs and with their head states ``N + 1`` (``N`` = batch
size). :func:`sizing_work` counts both from the specs alone, so a request can be
refused before it allocates anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controlloop.bounds import MAX_BATCH
from controlloop.specs import SystemSpec


@dataclass(frozen=True)
class SizingWork:
    pairs: int  # (server, accelerator) pairs (a server without perf data counts one)
    states: int  # sum of N + 1 over the pairs: floats per chain evaluation

    def too_large(self, *, max_pairs: int, max_states: int) -> str | None:
        """Why the work is over the limits (one line), or ``None``."""
        if self.pairs > max_pairs:
            return (
                f"{self.pairs} (server, accelerator) pairs to size; at most {max_pairs} per "
                "request: send fewer servers or accelerators"
            )
        if self.states > max_states:
            return (
                f"{self.states} chain states to evaluate (sum of batch size + 1 over "
                f"{self.pairs} pairs); at most {max_states} per request: send fewer servers "
                "or smaller batch sizes"
            )
        return None


def sizing_work(system: SystemSpec) -> SizingWork:
    """Pairs and chain states :func:`~controlloop.optimizer.candidates.build_candidates`
    would size (an upper bound: filters such as ``keepAccelerator`` are ignored)."""
    accs = {a.name for a in system.accelerators}
    perf_by_model: dict[str, list[tuple[int, int]]] = {}
    for perf in system.models:
        if perf.acc in accs:
            perf_by_model.setdefault(perf.name, []).append((perf.max_batch_size, perf.at_tokens))
    pairs = states = 0
    for server in system.servers:
        perfs = perf_by_model.get(server.model, ())
        pairs += max(1, len(perfs))  # every server costs work, sized or not
        load = server.load
        if load.arrival_rate <= 0 or load.avg_out_tokens <= 0:
            continue  # zero load: no chain is evaluated
        k = max(load.avg_out_tokens, 1.0)
        for max_batch, at_tokens in perfs:
            n = server.max_batch_size or max(1, math.floor(max_batch * at_tokens / k))
            states += min(n, MAX_BATCH) + 1
    return SizingWork(pairs, states)
