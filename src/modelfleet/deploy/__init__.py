"""Deploying modelfleet somewhere: pure fleet file -> files renderers (they import no control/ or api/ code)."""
