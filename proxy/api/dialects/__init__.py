"""Request models and translations of the OpenAI and Ollama dialects (routes in api/routes)."""
