"""Value types shared by the gateway and the control plane; stdlib only."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    STOPPED = "stopped"


@dataclass(eq=False, slots=True)
class Replica:
    """One running copy of a deployment, reachable at `url` (an OpenAI base URL ending in /v1).

    The control plane writes `state`, `reason` and the engine's `load` (with `load_at`, a monotonic
    time); the gateway counts `inflight` and consecutive `failures`, and reports them.
    """

    deployment: str
    name: str
    url: str
    state: ReplicaState = ReplicaState.STARTING
    reason: str = "starting"
    inflight: int = 0
    failures: int = 0  # in a row; reset by a success
    requests: int = 0  # ever handed this replica
    failed: int = 0  # ever failed on it before the first byte
    load: float = 0.0
    load_at: float = 0.0

    @property
    def ready(self) -> bool:
        return self.state is ReplicaState.READY

    def mark(self, state: ReplicaState, reason: str = "") -> None:
        self.state = state
        self.reason = reason or state.value


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
