# The same entry points for people and CI; each target is a script in scripts/.
.PHONY: run test test-fast setup lint bench
run:
	scripts/run
test:
	scripts/test
test-fast:
	scripts/test --fast
setup:
	scripts/setup dev
lint:
	scripts/setup dev && scripts/lint
bench:
	scripts/setup dev && scripts/bench
