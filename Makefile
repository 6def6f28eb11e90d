# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-faults test-django lint bench clean

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

# The Django drop-in tests against another Django release, in a venv of its own:
# `make test-django DJANGO=4.2`. A release that needs a newer Python than $(PYTHON)
# installs only with DJANGO_PIP_FLAGS=--ignore-requires-python, which Django does not support.
DJANGO ?= 4.2
DJANGO_PIP_FLAGS ?=
DJANGO_VENV := .venv-django-$(DJANGO)
DJANGO_TESTS := tests/sessions/test_django.py tests/sessions/test_django_signing.py tests/test_ownership_query.py

test-django:
	$(PYTHON) -m venv $(DJANGO_VENV)
	$(DJANGO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DJANGO_VENV)/bin/python -m pip install --quiet -e '.[test]'
	$(DJANGO_VENV)/bin/python -m pip install --quiet $(DJANGO_PIP_FLAGS) 'django==$(DJANGO).*'
	$(DJANGO_VENV)/bin/python -m django --version
	$(DJANGO_VENV)/bin/python -m pytest $(DJANGO_TESTS)

# Needs wrk (apt-get install -y wrk); writes docs/benchmarks.md.
bench: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.run

lint: install
	$(BIN)/ruff check gateway tests bench

clean:
	rm -rf $(VENV) .venv-django-* .pytest_cache .hypothesis
