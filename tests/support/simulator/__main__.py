"""`python -m tests.support.simulator`: run the Ollama simulator (see `cli.py` and `--help`)."""

from tests.support.simulator.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
