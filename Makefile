# The two commands of the README: `make demo` and `make test`.
# Both create .venv, install the CPU build of torch first (an unpinned torch pulls
# several GB of CUDA packages), then the package itself.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
OUT ?= out/demo

.PHONY: demo test lint install install-dev clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/filterscope demo --out $(OUT)

test: $(VENV)/.installed-dev lint
	$(PY) -m pytest

# Lint and type check (part of `make test`, so CI runs them); configuration in pyproject.toml.
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) out build src/*.egg-info .pytest_cache
