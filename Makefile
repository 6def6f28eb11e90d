# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-faults lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/media-gateway demo

test: install
	$(BIN)/python -m pytest -m "not faults"

# Stops, pauses and replaces PostgreSQL servers of its own; needs Debian's pgbouncer and postgresql.
test-faults: install
	$(BIN)/python -m pytest -m faults

lint: install
	$(BIN)/ruff check gateway tests

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
