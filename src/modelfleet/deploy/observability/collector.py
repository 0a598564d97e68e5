"""The OpenTelemetry Collector config: OTLP in (the gateway, vLLM), traces out to Tempo or Jaeger.

Both take OTLP natively (Jaeger since 1.35), so the only difference is the exporter's address.
"""

from __future__ import annotations

from typing import Any

BACKENDS = {"tempo": "tempo:4317", "jaeger": "jaeger-collector:4317"}


def collector(backend: str, endpoint: str | None) -> dict[str, Any]:
    exporter = f"otlp/{backend}"
    return {
        "receivers": {
            "otlp": {"protocols": {"grpc": {"endpoint": "0.0.0.0:4317"}, "http": {"endpoint": "0.0.0.0:4318"}}}
        },
        "processors": {
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20},
            "batch": {},
        },
        "exporters": {exporter: {"endpoint": endpoint or BACKENDS[backend], "tls": {"insecure": True}}},
        "extensions": {"health_check": {"endpoint": "0.0.0.0:13133"}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"], "exporters": [exporter]}
            },
        },
    }
