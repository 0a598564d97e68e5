"""A model server pod drains before SIGTERM: the preStop hook `modelfleet deploy k8s` renders waits until vLLM
reports no request running or waiting (its /metrics), within drain_timeout, and the grace period outlasts it.
The hook's command runs here as rendered, against a small server speaking vLLM's metrics format."""

from __future__ import annotations

import http.server
import subprocess
import threading
import time

import pytest
from conftest import free_port
from test_k8s_render import build, render

RUNNING = '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{model_name="m"}} {running}\n'
WAITING = '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{model_name="m"}} {waiting}\n'


class Metrics(http.server.BaseHTTPRequestHandler):
    running, waiting = 0.0, 0.0

    def do_GET(self) -> None:
        body = (RUNNING.format(running=Metrics.running) + WAITING.format(waiting=Metrics.waiting)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server_pod(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("k8s")
    render(out)
    docs = build(out, "prod")
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "qwen-7b-awq")


@pytest.fixture
def vllm():
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port
    server.shutdown()
    server.server_close()


def prestop(pod: dict, port: int, drain: float) -> tuple[float, subprocess.CompletedProcess]:
    """Run the rendered hook, with its port, pause (0 here, 5s rendered) and drain_timeout given for the test."""
    command = pod["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python3", "-c"] and command[3:] == ["8000", "5", "120"]  # as rendered
    started = time.monotonic()
    done = subprocess.run([*command[:3], str(port), "0", str(drain)], capture_output=True, text=True, timeout=30)
    return time.monotonic() - started, done


def test_the_grace_period_outlasts_the_hook(server_pod):
    spec = server_pod["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == 5 + 120 + 10  # pause + drain_timeout + a margin to exit


def test_the_hook_waits_for_requests_in_flight(server_pod, vllm):
    Metrics.running, Metrics.waiting = 1, 2
    threading.Timer(0.8, lambda: setattr(Metrics, "waiting", 0)).start()
    threading.Timer(1.5, lambda: setattr(Metrics, "running", 0)).start()  # the last request finishes
    took, done = prestop(server_pod, vllm, drain=20)
    assert done.returncode == 0, done.stderr
    assert 1.5 <= took < 5


def test_the_hook_gives_up_at_drain_timeout(server_pod, vllm):
    Metrics.running, Metrics.waiting = 1, 0  # a request that never ends
    took, done = prestop(server_pod, vllm, drain=2)
    assert done.returncode == 0, done.stderr
    assert 2 <= took < 4


def test_a_server_without_vllm_metrics_is_idle(server_pod):
    took, done = prestop(server_pod, free_port(), drain=20)  # nothing listens: the dev overlay's engine, say
    assert done.returncode == 0 and took < 2
