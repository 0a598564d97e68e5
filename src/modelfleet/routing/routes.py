"""Route -> deployment: a weighted choice, fixed at start-up so the hot path does one bisect.

A sticky route hashes a key (a header such as X-Session-ID, or the body's `user`) to a point in
[0, 1) and picks with it instead of a random number: the same key always lands on the same
deployment, and changing 80/20 to 70/30 moves only the keys between 0.7 and 0.8.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Mapping
from itertools import accumulate

_SCALE = float(1 << 64)


def sticky_point(route: str, key: str) -> float:
    """A stable point in [0, 1) for `key`; salted by the route so routes split independently."""
    # surrogateescape: a header may hold any byte (aiohttp hands on non-UTF-8 ones as surrogates)
    h = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8, key=route.encode()[:64]).digest()
    return int.from_bytes(h, "big") / _SCALE


class WeightedChoice:
    """Pick a deployment of a route in proportion to its weight."""

    __slots__ = ("_cumulative", "_names", "_total", "by_weight")

    def __init__(self, weights: Mapping[str, int]) -> None:
        live = [(name, w) for name, w in weights.items() if w > 0]
        self._names = [name for name, _ in live]
        self._cumulative = list(accumulate(w for _, w in live))
        self._total = self._cumulative[-1]
        self.by_weight = [name for name, _ in sorted(live, key=lambda nw: -nw[1])]

    def pick(self, rand: float | None = None) -> str:
        if len(self._names) == 1:
            return self._names[0]
        point = (random.random() if rand is None else rand) * self._total
        return self._names[bisect.bisect_right(self._cumulative, point)]

    def order(self, first: str) -> list[str]:
        """`first`, then the route's other deployments, heaviest first: the order to fail over in."""
        return [first, *(n for n in self.by_weight if n != first)]
