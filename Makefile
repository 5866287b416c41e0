# Entry points. Every target keeps DDS on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST

.PHONY: setup test demo lint format bench clean

setup:            ## install everything into .venv (idempotent)
	./scripts/setup.sh

test:             ## set up, then run ruff and every test
	./scripts/test.sh

demo:             ## set up, then run the node on the demo camera with a tiny offline model
	./scripts/demo.sh

lint:
	. scripts/env.sh && ruff check . && ruff format --check .

format:
	. scripts/env.sh && ruff format . && ruff check --fix .

bench:            ## the benchmarks (ratios measured side by side)
	. scripts/env.sh && python bench/tracker.py && python bench/node_latency.py

clean:
	rm -rf build install log
