# Two commands do all the set-up (Python 3.10+ and make are all they need):
#   make demo   - run the example project and drive signed Clerk webhooks at it
#   make test   - run the test suite (SQLite; PostgreSQL tests skip with a reason)
# Development (tox environments, listed in tox.ini): make lint, types, migrations,
# dist, test-matrix; make check runs what CI runs (.ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
# Interpreters pyenv keeps (often not on PATH), handed to tox to find.
PYENV_ROOT ?= $(HOME)/.pyenv
DISCOVER := $(foreach v,3.10 3.11 3.12 3.13,$(lastword $(wildcard $(PYENV_ROOT)/versions/$(v).*/bin/python$(v))))
TOX := $(VENV)/bin/tox run $(if $(strip $(DISCOVER)),--discover $(DISCOVER))

.PHONY: demo test test-postgres test-matrix lint types migrations dist check docs clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "django-clerk-sync needs Python 3.10 or newer: run make PYTHON=python3.1x ...")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

# tox and the tools the checks use (the dev extra), for the targets below.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

demo: $(VENV)/.installed
	$(PY) example_project/demo.py

test: $(VENV)/.installed
	$(PYTEST)
	$(PYTEST) --ds=tests.custom_user.settings tests/custom_user

# The same suite against a PostgreSQL server (default 127.0.0.1:5432, user postgres,
# database test; set PGHOST, PGPORT, PGUSER, PGDATABASE to change).
test-postgres: $(VENV)/.installed
	$(PY) -m pip install --quiet "psycopg[binary]>=3.1"
	CLERK_SYNC_TEST_DB=postgres $(PYTEST)
	CLERK_SYNC_TEST_DB=postgres $(PYTEST) --ds=tests.custom_user.settings tests/custom_user

# Every supported Python x Django combination installed here, the PostgreSQL ones
# (a server as for test-postgres) and the checks below (tox.ini). Interpreters tox
# cannot find are reported as skipped.
test-matrix: $(VENV)/.installed-dev
	$(TOX) --skip-missing-interpreters true

# ruff check and ruff format --check (`$(VENV)/bin/ruff format .` fixes the format).
lint: $(VENV)/.installed-dev
	$(TOX) -e lint

# mypy with django-stubs on the package.
types: $(VENV)/.installed-dev
	$(TOX) -e types

# The models and their migrations agree (makemigrations --check).
migrations: $(VENV)/.installed-dev
	$(TOX) -e migrations

# Build the sdist and wheel, twine check them, run the demo on the installed wheel;
# the checked files land in dist/.
dist: $(VENV)/.installed-dev
	$(TOX) -e wheel -- --dist-dir dist

# What CI runs (.ci/run: installs missing system packages, starts PostgreSQL).
check:
	.ci/run

# The documentation site (mkdocs.yml), built into site/ with every warning an error.
docs: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[docs]"
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) .tox build dist site *.egg-info .pytest_cache .mypy_cache .ruff_cache \
		.hypothesis example_project/db.sqlite3
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
