"""The fleet file: one YAML document that describes server, deployments and routes."""

from modelfleet.config.defaults import default_fleet
from modelfleet.config.loader import load_fleet, parse_fleet
from modelfleet.config.schema import (
    Cors,
    Deployment,
    Fleet,
    KubernetesDeployment,
    LlamaCppDeployment,
    OpenAIDeployment,
    Route,
    SageMakerDeployment,
    Server,
)

__all__ = [
    "Cors",
    "Deployment",
    "Fleet",
    "KubernetesDeployment",
    "LlamaCppDeployment",
    "OpenAIDeployment",
    "Route",
    "SageMakerDeployment",
    "Server",
    "default_fleet",
    "load_fleet",
    "parse_fleet",
]
