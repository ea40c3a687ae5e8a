PYTHON ?= python3

.PHONY: install install-test demo test lint bench

install:
	PYTHON=$(PYTHON) bash scripts/install-torch.sh
	$(PYTHON) -m pip install -e .

install-test:
	PYTHON=$(PYTHON) bash scripts/install-torch.sh
	$(PYTHON) -m pip install -e ".[test]"
	@# prometheus + promtool for tests/integration/test_prometheus.py (skipped without them):
	@# installed only when missing, and only where apt-get runs as root
	@if ! command -v prometheus >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends prometheus) \
		|| echo "prometheus not installed: tests/integration/test_prometheus.py will be skipped"; \
	fi
	@# a C compiler builds the compiled training step (streamlearn/kernels/cpu/binding.py); without
	@# one the learner runs the torch step and tests/unit/learn/test_native.py is skipped
	@if ! command -v cc >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends gcc libc6-dev) \
		|| echo "no C compiler installed: tests/unit/learn/test_native.py will be skipped"; \
	fi

demo: install
	$(PYTHON) -m streamlearn demo

lint:
	$(PYTHON) -m ruff check streamlearn tests benchmarks
	$(PYTHON) -m ruff format --check streamlearn tests benchmarks
	lint-imports

test: install-test lint
	$(PYTHON) -m pytest

bench:
	$(PYTHON) benchmarks/prequential.py
