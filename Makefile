PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run demo test lint browser bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "Python 3.11 or newer is needed ('$(PYTHON)' is older or missing): make PYTHON=python3.11 ..."; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/python -m bot

# The real bridge against the built-in simulators, and a page to play both sides (no account).
demo: $(STAMP_RUN)
	$(BIN)/python -m simulators.demo

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The demo's page is tested in Debian's chromium: installed here when missing and possible
# (root with apt-get, as in CI); elsewhere that one test is skipped, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the demo's browser test"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	      >/dev/null; } || echo "chromium could not be installed: the browser test is skipped"; \
	  else echo "chromium missing (not root with apt-get): the demo's browser test is skipped"; fi; }

# The suite mostly waits on loopback I/O: five workers keep two cores busy (drills start first).
test: lint browser
	$(BIN)/pytest -q -n 5 --dist worksteal

bench: $(STAMP_DEV)
	$(BIN)/python -m tests.bench.inbound
	$(BIN)/python -m tests.bench.inbound --bots 3
	$(BIN)/python -m tests.bench.outbound
	$(BIN)/python -m tests.bench.recovery
	$(BIN)/python -m tests.bench.reconcile
	$(BIN)/python -m tests.bench.storage
	$(BIN)/python -m tests.bench.media

clean:
	rm -rf $(VENV) build *.egg-info
