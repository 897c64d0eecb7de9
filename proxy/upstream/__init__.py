"""Talking to the inference engine (Ollama) upstream of the proxy."""
