"""The authenticated gateway in front of Ollama: JWT auth, validation, streaming relay, history."""

__version__ = "0.1.0"
