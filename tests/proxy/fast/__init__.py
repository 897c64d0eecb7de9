"""The fast tier: the proxy app in process (see conftest.py). A package, so that its modules can
bear the names of the real-server modules they come from."""
