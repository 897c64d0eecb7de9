"""`python -m proxy.simulator`: run the Ollama simulator (see `cli.py` and `--help`)."""

from proxy.simulator.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
