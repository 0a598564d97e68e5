"""The fleet `modelfleet serve` runs when no file is given: the bundled SmolLM2 on the embedded engine."""

from __future__ import annotations

from modelfleet.config.schema import Fleet

DEFAULT_ROUTE = "smollm2"

DEFAULT_FLEET_YAML = f"""\
# The built-in fleet: one embedded llama.cpp deployment serving the bundled
# SmolLM2-135M-Instruct GGUF, and a route of the same name.
deployments:
  smollm2:
    kind: llama-cpp
    wake_on_request: true   # stopped (modelfleet deployments stop smollm2)? the next request starts it
routes:
  {DEFAULT_ROUTE}:
    deployments: [smollm2]
"""


def default_fleet(**server: object) -> Fleet:
    from modelfleet.config.loader import parse_fleet

    fleet = parse_fleet(DEFAULT_FLEET_YAML, file="<built-in fleet>", env={})
    if server:
        fleet = fleet.model_copy(update={"server": fleet.server.model_copy(update=server)})
    return fleet
