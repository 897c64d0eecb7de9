"""`scripts/bench`: the proxy's performance, measured against the Ollama simulator (every row of
the performance table, in each deployment configuration) or against a real model, and written
to docs/benchmarks.json and docs/benchmarks.md."""
