"""The only persistence: a Store (teams, keys, the usage ledger) and Counters (limits in flight).

sqlite:///file.db      the laptop default; stdlib sqlite3 on a worker thread
postgresql://...       at scale, shared by every gateway (asyncpg)
memory                 limit counters in this process
redis://...            limit counters shared by every gateway, checked atomically in Lua
"""

from modelfleet.errors import ConfigError
from modelfleet.state.counters import Counters, LocalCounters, Verdict
from modelfleet.state.store import Store, UsageRow, open_store


def open_counters(url: str) -> Counters:
    if url == "memory":
        return LocalCounters()
    try:
        from modelfleet.state.redis_counters import RedisCounters
    except ImportError:
        hint = "state.counters: Redis counters need the redis client: pip install 'modelfleet[redis]'"
        raise ConfigError([hint]) from None
    return RedisCounters(url)


__all__ = ["Counters", "LocalCounters", "Store", "UsageRow", "Verdict", "open_counters", "open_store"]
