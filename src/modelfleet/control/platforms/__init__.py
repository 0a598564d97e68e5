"""Where a deployment runs, and how to start and stop it there.

base.py       the Platform protocol: start, stop, shutdown
local.py      llama-cpp: engine processes on this machine
url.py        openai: someone else's server; modelfleet only watches it
sagemaker.py  sagemaker: an endpoint created and deleted through the AWS API
kubernetes.py kubernetes: a Deployment scaled through the Kubernetes API (kube_api.py), pods from EndpointSlices
"""
