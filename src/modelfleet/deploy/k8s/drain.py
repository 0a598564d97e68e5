"""How a model server pod drains: vLLM stops at once on SIGTERM (requests in flight are cut), so its preStop
hook waits for them first.

    pod deleted (a stop, a rollout)  -> its endpoint turns unready: the gateway sends it nothing new
    preStop: sleep PRESTOP_SECONDS   -> kube-proxy and other endpoint readers catch up
             then poll /metrics      -> until vllm:num_requests_running + waiting is 0, or drain_timeout
    SIGTERM                          -> nothing left to cut
    terminationGracePeriodSeconds = PRESTOP_SECONDS + drain_timeout + a margin to exit (the kubelet counts the
    preStop hook inside the grace period, so it must be longer than the hook can take)

A server without those metrics (the dev overlay's embedded engine) reads as idle: the hook ends after the sleep.
The script is plain python3 with the standard library: the vLLM image has it, and so has modelfleet's.
"""

from __future__ import annotations

import math

from modelfleet.deploy.k8s.options import PRESTOP_SECONDS

EXIT_MARGIN = 10  # seconds for the server to exit after SIGTERM

SCRIPT = """\
import re, sys, time, urllib.request
port, pause, drain = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + pause + drain
time.sleep(pause)
busy = re.compile(r"^vllm:num_requests_(?:running|waiting)(?:\\{[^}]*\\})? ([0-9.eE+-]+)$", re.M)
while time.monotonic() < deadline:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except Exception:
        break
    if sum(float(v) for v in busy.findall(text)) == 0:
        break
    time.sleep(1)
"""


def prestop(port: int, drain_timeout: float) -> dict:
    """The container's lifecycle: wait for requests in flight before the server is told to stop."""
    command = ["python3", "-c", SCRIPT, str(port), str(PRESTOP_SECONDS), str(math.ceil(drain_timeout))]
    return {"preStop": {"exec": {"command": command}}}


def grace_seconds(drain_timeout: float) -> int:
    return PRESTOP_SECONDS + math.ceil(drain_timeout) + EXIT_MARGIN
