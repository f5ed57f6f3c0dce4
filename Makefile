# Every target creates .venv if it is missing and installs the package into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-avx2 test-slow lint bench install clean format data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The embedded data (Fashion-MNIST): a no-op when present, else installed or explained.
data:
	scripts/ensure-data

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: data lint
	$(BIN)/python -m pytest -q

# The suite again on other CPU kernels (MKL and oneDNN limited to AVX2): a tolerance that
# encodes one CPU's rounding (AVX-512, AMX) fails here before it fails on a user's machine.
test-avx2: data $(STAMP)
	MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/python -m pytest -q -p no:cacheprovider

test-slow: data $(STAMP)
	$(BIN)/python -m pytest -q -m slow

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: data $(STAMP)
	$(BIN)/camwall bench

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache
