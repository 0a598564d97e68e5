"""`modelfleet deploy k8s`: the fleet file -> a Kustomize tree for the whole platform.

source.py      read the fleet file; refuse secrets that would land in a file
gateway.py     the gateway: Deployment, Service, PDB, HPA, ServiceAccount (+ the fleet file as a ConfigMap)
rbac.py        its Role where kubernetes deployments live: only what the control plane calls
models.py      one model server (Deployment + Service) per `kind: kubernetes` deployment
drain.py       its preStop hook: requests in flight finish before vLLM gets SIGTERM
teams.py       per-team namespaces: ResourceQuota (with rollout headroom), LimitRange, NetworkPolicies
monitoring.py  ServiceMonitor and PrometheusRule, as an optional Kustomize Component
overlays.py    dev, staging, prod
tree.py        assemble, dump (byte-stable), write
"""

from modelfleet.deploy.k8s.options import Options
from modelfleet.deploy.k8s.source import read
from modelfleet.deploy.k8s.tree import render, write

__all__ = ["Options", "read", "render", "write"]
