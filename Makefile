# dask_rec: two commands do the whole set-up on a fresh Debian/Ubuntu machine.
#   make demo   installs what is missing, then runs generate -> ingest -> fit -> evaluate -> recommend
#   make test   installs what is missing, then runs the test suite
# The virtual environment lives in .venv and is reused while pyproject.toml is unchanged.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

# SuiteSparse headers (CHOLMOD, for scikit-sparse) and an optimized BLAS (OpenBLAS).
APT_PACKAGES := libsuitesparse-dev libopenblas-dev pkg-config
CHOLMOD_H    := /usr/include/suitesparse/cholmod.h

.PHONY: demo test system-deps venv bench clean help

help:
	@echo "make demo   - set up (system packages, .venv) and run the end-to-end demo"
	@echo "make test   - set up and run the tests (PYTEST_ARGS='-m slow' for the slow ones)"
	@echo "make bench  - run the benchmarks against the reference sansa"

system-deps:
	@if [ -f $(CHOLMOD_H) ] && ldconfig -p 2>/dev/null | grep -q libopenblas; then exit 0; fi; \
	echo "Installing system packages: $(APT_PACKAGES)"; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else SUDO=none; fi; \
	if [ "$$SUDO" = none ] || ! command -v apt-get >/dev/null; then \
	  echo "ERROR: cannot install system packages here. Install SuiteSparse (CHOLMOD headers, >= 5.x)" >&2; \
	  echo "       and OpenBLAS with your package manager, e.g. 'apt-get install $(APT_PACKAGES)'," >&2; \
	  echo "       'dnf install suitesparse-devel openblas-devel' or 'brew install suite-sparse openblas'." >&2; \
	  exit 1; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null

$(STAMP): pyproject.toml | system-deps
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "dask_rec needs Python >= 3.10; set PYTHON=python3.X")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dask-rec demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_fit.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
