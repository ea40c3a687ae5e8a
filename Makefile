PYTHON ?= python3

.PHONY: install install-serve install-test toolchain demo test lint bench test-rules gpu-check

# every role (worker, produce, demo with its plot, serve); torch first, by the script
install: toolchain
	PYTHON=$(PYTHON) bash scripts/install-torch.sh
	$(PYTHON) -m pip install -e ".[worker,plots]"

# the serving role alone (`streamlearn serve`): no torch
install-serve:
	$(PYTHON) -m pip install -e ".[serve]"

install-test: toolchain
	PYTHON=$(PYTHON) bash scripts/install-torch.sh
	$(PYTHON) -m pip install -e ".[test]"
	@# prometheus + promtool for tests/integration/test_prometheus.py and the alert rules' unit
	@# tests (tests/deploy/test_alert_rules.py); both are skipped without them
	$(call apt_install_unless,command -v prometheus >/dev/null,prometheus,\
		tests/integration/test_prometheus.py and the promtool rule tests will be skipped)

# a C compiler and Python's headers, with which installing the package builds the compiled CPU
# kernels (setup.py); without them the install still succeeds, the learner runs the torch step
# and the kernel tests are skipped (python3-dev: the headers of Debian's own Python)
HAS_PYTHON_HEADERS = $(PYTHON) -c 'import os, sys, sysconfig; \
	sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))'
toolchain:
	$(call apt_install_unless,command -v cc >/dev/null,gcc libc6-dev,\
		the compiled CPU kernels will not be built)
	$(call apt_install_unless,$(HAS_PYTHON_HEADERS),python3-dev,\
		the compiled CPU kernels will not be built)

# $(call apt_install_unless,CHECK,PACKAGES,WHAT IS MISSED): apt-get installs PACKAGES unless the
# shell command CHECK succeeds, only where apt-get runs as root; a failure is reported, not fatal
define apt_install_unless
	@if ! $(1) 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(2)) || echo "$(2) not installed:$(3)"; \
	fi
endef

demo: install
	$(PYTHON) -m streamlearn demo

lint:
	$(PYTHON) -m ruff check streamlearn tests benchmarks
	$(PYTHON) -m ruff format --check streamlearn tests benchmarks
	$(PYTHON) -c "from importlinter.cli import lint_imports_command; lint_imports_command()"

# the suite on TEST_WORKERS processes (pytest-xdist; 0: in this one), an idle one taking queued
# tests from the others: much of its time is integration tests waiting on brokers, servers and
# killed workers. Each worker starts its own session fixtures (a broker of its own). More
# workers than cores starved the consumer-group tests' tight poll deadlines (a rank was
# dropped from its group)
TEST_WORKERS ?= 2
test: install-test lint
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist worksteal

# the alert rules' promtool unit tests alone (`make test` runs them too, in
# tests/deploy/test_alert_rules.py, which skips them where promtool is missing)
test-rules:
	@command -v promtool >/dev/null 2>&1 || { echo "no promtool: apt-get install prometheus" \
		"(make install-test does it as root)"; exit 1; }
	cd deploy/prometheus && promtool check rules alerts.yml && promtool test rules alerts_test.yml

bench:
	$(PYTHON) benchmarks/prequential.py

# the checks that need an NVIDIA GPU, their log and figures in gpu-check-output/
gpu-check: install-test
	PYTHON=$(PYTHON) bash scripts/gpu-check.sh
