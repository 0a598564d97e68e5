"""The usage ledger: counted in memory on the hot path, written to the store in batches.

A request adds to one in-memory row (day, team, route, deployment, variant); every
`flush_interval` the rows go to the store as one transaction. A failed write puts the rows back,
so nothing is lost while the database is away; shutdown flushes whatever is left.
"""

from __future__ import annotations

import logging
import time

from modelfleet.background import Periodic, Reported
from modelfleet.state.store import Store, UsageRow

log = logging.getLogger("modelfleet.state")

Key = tuple[str, str, str, str, str]


class UsageLedger:
    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._rows: dict[Key, list[int]] = {}  # key -> [requests, errors, prompt, completion, rate_limited]
        self._day_sec = -1
        self._day = ""
        self._failing = False
        self._loop = Periodic("usage ledger flush", interval, self.flush, logger=log)

    def record(self, team: str, route: str, deployment: str, variant: str, ok: bool, prompt: int, completion: int,
               refused: bool = False) -> None:  # fmt: skip
        """`refused`: turned away by the team's limits (a 429), counted apart from the errors."""
        now = int(time.time()) // 86400
        if now != self._day_sec:
            self._day_sec = now
            self._day = time.strftime("%Y-%m-%d", time.gmtime(now * 86400))
        key = (self._day, team, route, deployment, variant)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = [0, 0, 0, 0, 0]
        row[0] += 1
        if refused:
            row[4] += 1
        elif not ok:
            row[1] += 1
        row[2] += prompt
        row[3] += completion

    async def flush(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, {}
        try:
            await self.store.init()
            await self.store.add_usage([UsageRow(*k, *v) for k, v in rows.items()])
        except Exception as exc:
            for key, counts in rows.items():  # put them back: they go with the next flush
                row = self._rows.setdefault(key, [0, 0, 0, 0, 0])
                for i, n in enumerate(counts):
                    row[i] += n
            if not self._failing:
                log.error("usage ledger: cannot write to the store (%s); keeping %d rows in memory", exc, len(rows))
            self._failing = True
            raise Reported(f"{type(exc).__name__}: {exc}") from exc
        if self._failing:
            log.info("usage ledger: the store is back; wrote the rows kept in memory")
        self._failing = False

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Stop the loop and write what is left; if that fails, say exactly what is lost."""
        await self._loop.stop()
        try:
            await self.flush()
        except Exception as exc:
            req = sum(r[0] for r in self._rows.values())
            tokens = sum(r[2] + r[3] for r in self._rows.values())
            log.error("usage ledger: the final write failed (%s: %s); %d requests and %d tokens in %d rows are "
                      "not in the store", type(exc).__name__, exc, req, tokens, len(self._rows))  # fmt: skip
