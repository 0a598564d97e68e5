"""Renderers: the fleet file in, files out (Terraform for AWS, a Kustomize tree, a CI pipeline). Pure config ->
files: no network, no control plane; `modelfleet deploy ...` (cli/deploy.py) writes the files and runs the tools."""
