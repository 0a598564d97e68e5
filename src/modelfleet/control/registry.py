"""The replica registry: the one writer of replica state, and the one place that tells of a change.

Platforms (engines, SageMaker, Kubernetes), health checks and wakes all change a replica through
`mark`; every change reaches every listener (the dispatchers, so queued requests move the moment a
replica turns ready, or fail fast when none is left; the lifecycle, so a wake knows it is done).

An ejection (passive health) holds against a platform's own view: an endpoint that its platform
still sees as InService stays out until its health check lets it back in (`readmit`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from modelfleet.values import Replica, ReplicaState

log = logging.getLogger("modelfleet.control")

Listener = Callable[[Replica], None]
_PLATFORMS_OWN = (ReplicaState.STARTING, ReplicaState.STOPPED)


class ReplicaRegistry:
    def __init__(self) -> None:
        self.replicas: dict[str, list[Replica]] = {}
        self._listeners: list[Listener] = []
        self._ejected: set[int] = set()  # id(replica) of the ejected
        # Counted for /metrics, {(deployment, replica): n}.
        self.ejections: dict[tuple[str, ...], int] = {}
        self.readmissions: dict[tuple[str, ...], int] = {}

    def add(self, deployment: str, replicas: list[Replica]) -> list[Replica]:
        self.replicas[deployment] = replicas
        return replicas

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def all(self) -> list[Replica]:
        return [r for reps in self.replicas.values() for r in reps]

    def mark(self, replica: Replica, state: ReplicaState, reason: str = "") -> None:
        """Set a replica's state; a platform's `ready` does not end an ejection (see `readmit`)."""
        reason = reason or state.value
        if state is ReplicaState.READY and id(replica) in self._ejected:
            return
        if state is not ReplicaState.UNHEALTHY:
            self._ejected.discard(id(replica))  # stopped or (re)starting: a new life
        self._set(replica, state, reason)

    def mark_all(self, deployment: str, state: ReplicaState, reason: str = "") -> None:
        for replica in self.replicas[deployment]:
            self.mark(replica, state, reason)

    def eject(self, replica: Replica, reason: str) -> None:
        if replica.state in _PLATFORMS_OWN:
            return  # stopped or (re)starting since the check began: the platform's word stands
        self._ejected.add(id(replica))
        key = (replica.deployment, replica.name)
        self.ejections[key] = self.ejections.get(key, 0) + 1
        self._set(replica, ReplicaState.UNHEALTHY, reason)

    def ejected(self, replica: Replica) -> bool:
        return id(replica) in self._ejected

    def readmit(self, replica: Replica) -> None:
        if replica.state in _PLATFORMS_OWN:
            return  # a health check that passed while its platform stopped or restarted the replica
        if id(replica) in self._ejected:
            key = (replica.deployment, replica.name)
            self.readmissions[key] = self.readmissions.get(key, 0) + 1
        self._ejected.discard(id(replica))
        self._set(replica, ReplicaState.READY, "ready")

    def move(self, replica: Replica, url: str) -> None:
        """A replica's address changed (an engine's first start, a pod that moved); listeners learn of it
        with the state change that always follows (a replica is never ready at an address unannounced)."""
        replica.url = url

    def _set(self, replica: Replica, state: ReplicaState, reason: str) -> None:
        if replica.state is state and replica.reason == reason:
            return
        if state is not replica.state:
            level = logging.INFO if state in (ReplicaState.READY, ReplicaState.STARTING) else logging.WARNING
            log.log(level, "replica %s is %s: %s", replica.name, state.value, reason)
        replica.state = state
        replica.reason = reason
        for listener in self._listeners:
            try:
                listener(replica)
            except Exception:  # one listener's bug must not keep the change from the others
                log.exception("a listener failed on the change of replica %s", replica.name)

    def not_ready(self) -> dict[str, list[dict[str, str]]]:
        return {
            name: [{"replica": r.name, "state": r.state.value, "reason": r.reason} for r in reps if not r.ready]
            for name, reps in self.replicas.items()
            if any(not r.ready for r in reps)
        }
