"""modelfleet: run your own LLMs behind one OpenAI-compatible gateway, driven by one fleet file."""

__version__ = "0.1.0"
