"""The embedded engine: llama.cpp behind an OpenAI-compatible HTTP server, one process per replica."""

READY_LINE = "MODELFLEET_ENGINE_READY"  # printed on stdout with the bound port once the model is loaded
