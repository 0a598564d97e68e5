"""Route -> deployment: a weighted choice, fixed at start-up so the hot path does one bisect."""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping
from itertools import accumulate


class WeightedChoice:
    """Pick a deployment of a route in proportion to its weight."""

    __slots__ = ("_cumulative", "_names", "_total")

    def __init__(self, weights: Mapping[str, int]) -> None:
        live = [(name, w) for name, w in weights.items() if w > 0]
        self._names = [name for name, _ in live]
        self._cumulative = list(accumulate(w for _, w in live))
        self._total = self._cumulative[-1]

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def pick(self, rand: float | None = None) -> str:
        if len(self._names) == 1:
            return self._names[0]
        point = (random.random() if rand is None else rand) * self._total
        return self._names[bisect.bisect_right(self._cumulative, point)]
