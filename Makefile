# Entry points. Every target keeps DDS on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST

.PHONY: setup test test-tf5 demo lint format bench clean

# The tests that compare with the official outputs; CI also runs them under the newest tested
# transformers (test-tf5), in a second venv that has no ROS interfaces.
PARITY_TESTS := test/test_sa2va_parity.py test/test_qwen_vl_parity.py test/test_internvl_parity.py

setup:            ## install everything into .venv (idempotent)
	./scripts/setup.sh

test:             ## set up, then run ruff and every test (transformers 4.57)
	./scripts/test.sh

test-tf5:         ## the parity tests under transformers 5.23, in .venv-tf5
	SA2VA_VENV=$(CURDIR)/.venv-tf5 SA2VA_TRANSFORMERS=5.23 SA2VA_NO_INTERFACES=1 ./scripts/test.sh $(PARITY_TESTS)

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
