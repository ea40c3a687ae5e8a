PYTHON ?= python3

.PHONY: install install-test demo test lint bench

install:
	PYTHON=$(PYTHON) bash scripts/install-torch.sh
	$(PYTHON) -m pip install -e .

install-test:
	PYTHON=$(PYTHON) bash scripts/install-torch.sh
	$(PYTHON) -m pip install -e ".[test]"

demo: install
	$(PYTHON) -m streamlearn demo

lint:
	$(PYTHON) -m ruff check streamlearn tests benchmarks
	$(PYTHON) -m ruff format --check streamlearn tests benchmarks

test: install-test lint
	$(PYTHON) -m pytest

bench:
	$(PYTHON) benchmarks/prequential.py
