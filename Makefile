# The same entry points for people and CI; each target is a script in scripts/.
.PHONY: run test setup lint bench
run:
	scripts/run
test:
	scripts/test
setup:
	scripts/setup dev
lint:
	scripts/setup dev && scripts/lint
bench:
	scripts/setup dev && .venv/bin/python scripts/bench_proxy.py
