"""Value types shared by the gateway and the control plane; stdlib only."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    STOPPED = "stopped"


@dataclass(eq=False, slots=True)
class Traffic:
    """Routing's counters for one replica, written only by the dispatcher and the attempt plan."""

    inflight: int = 0
    failures: int = 0  # in a row; reset by a success, and when the control plane ejects the replica
    requests: int = 0  # ever handed this replica
    failed: int = 0  # ever failed on it


@dataclass(eq=False, slots=True)
class Replica:
    """One running copy of a deployment, reachable at `url` (an OpenAI base URL ending in /v1).

    `state`, `reason` and `url` are written only by the control plane's ReplicaRegistry, which tells
    every listener of each change; `load` and `load_at` (a monotonic time) are the engine's readings;
    `traffic` is routing's.
    """

    deployment: str
    name: str
    url: str
    state: ReplicaState = ReplicaState.STARTING
    reason: str = "starting"
    load: float = 0.0
    load_at: float = 0.0
    traffic: Traffic = field(default_factory=Traffic)

    @property
    def ready(self) -> bool:
        return self.state is ReplicaState.READY


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @staticmethod
    def reported(u: dict) -> Usage:
        """The `usage` object a deployment sent: a count that is not a whole number in [0, 2^31) (a null,
        a string, a negative) counts as 0, so that it cannot break the accounting, metrics or limits after it."""
        p, c = u.get("prompt_tokens", 0), u.get("completion_tokens", 0)
        return Usage(
            p if type(p) is int and 0 <= p < 2**31 else 0,
            c if type(c) is int and 0 <= c < 2**31 else 0,
        )
