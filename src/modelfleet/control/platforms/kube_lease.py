"""Leader election for a kubernetes deployment: a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

Every gateway pod runs a control plane, but only the pod holding a deployment's Lease acts on it (scales it,
applies its schedule and idle stop, reconciles drift); the others route requests and publish what they see.

    holder   renews every duration/3; it counts itself the leader only until `now + duration * 0.8` of its
             last successful renewal began, so it has stopped acting before anyone may take over
    others   take the Lease when its holder is empty (released on shutdown) or when its record has not
             changed for a whole `duration` measured on their own clock (no trust in another pod's clock),
             from when the GET that first showed it *answered* (a renewal may land while a GET is slow)
    writes   carry the resourceVersion they read: of two pods racing for an expired Lease, one gets 409

Identity: the pod name (HOSTNAME) and the process id, so two workers or two pods never share one.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
import uuid
from typing import Any

from modelfleet.control.platforms.kube_api import KubeAPI

log = logging.getLogger("modelfleet.control")

RENEW_DEADLINE = 0.8  # of the duration: a holder that could not renew for this long stops acting


def identity() -> str:
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


class LeaderLease:
    def __init__(self, api: KubeAPI, duration: float, me: str | None = None) -> None:
        self.api = api
        self.duration = duration
        self.me = me or identity()
        self._valid_until = 0.0  # monotonic: leading while now is before this
        self._seen: tuple[Any, ...] | None = None  # the Lease record last read
        self._seen_at = 0.0  # monotonic: when it last changed
        self._wrote = False  # this pod's name is in the Lease as far as it knows (so release it on shutdown)

    @property
    def leading(self) -> bool:
        return time.monotonic() < self._valid_until

    @property
    def period(self) -> float:
        return max(0.1, self.duration / 3)

    async def step(self) -> bool:
        """Take or renew the Lease if it is ours to take; whether we lead now. API errors propagate."""
        began = time.monotonic()
        lease = await self.api.get_lease()
        # The holder's renewal may have been written at any time during a slow GET: count the record's age
        # from when the answer arrived (later is safe here; `began` is the safe side only for the holder).
        answered = time.monotonic()
        spec = lease.spec if lease is not None else None
        holder = spec.holderIdentity if spec is not None else None
        record = (holder, spec.renewTime, spec.leaseTransitions) if spec is not None else None
        if record != self._seen:
            self._seen, self._seen_at = record, answered
        duration = spec.leaseDurationSeconds if spec is not None and spec.leaseDurationSeconds else self.duration
        self._wrote = holder == self.me
        if holder and holder != self.me and began < self._seen_at + duration:
            self._lose(f"held by {holder}")
            return False
        now = datetime.datetime.now(datetime.UTC)
        transitions = (spec.leaseTransitions or 0) if spec is not None else 0
        taking = holder != self.me
        new = {
            "holderIdentity": self.me,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": now if taking or spec is None else spec.acquireTime,
            "renewTime": now,
            "leaseTransitions": transitions + 1 if taking and holder else transitions,
        }
        if not await self.api.write_lease(lease, new):
            self._lose("another gateway pod took it first")
            return False
        self._wrote = True
        if taking:
            log.info("this gateway pod (%s) now holds the Lease %s/%s: it acts on %s", self.me,
                     self.api.namespace, self.api.lease_name, self.api.where)  # fmt: skip
        self._valid_until = began + self.duration * RENEW_DEADLINE
        return True

    def _lose(self, why: str) -> None:
        if self.leading:
            log.warning("this gateway pod no longer holds the Lease %s/%s (%s)", self.api.namespace,
                        self.api.lease_name, why)  # fmt: skip
        self._valid_until = 0.0

    async def release(self) -> None:
        """On a clean shutdown: empty the holder, so another pod takes over at once instead of after `duration`.

        Also when this pod stopped leading because its renewals failed: the Lease may still name it.
        """
        self._valid_until = 0.0
        if not self._wrote:  # the Lease names another pod, or never named this one
            return
        lease = await self.api.get_lease()
        if lease is None or lease.spec is None or lease.spec.holderIdentity != self.me:
            return
        now = datetime.datetime.now(datetime.UTC)
        await self.api.write_lease(lease, {
            "holderIdentity": None, "leaseDurationSeconds": 1, "acquireTime": lease.spec.acquireTime,
            "renewTime": now, "leaseTransitions": lease.spec.leaseTransitions or 0,
        })  # fmt: skip
