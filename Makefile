# Two commands do all the set-up (Python 3.10+ and make are all they need):
#   make demo   - run the example project and drive signed Clerk webhooks at it
#   make test   - run the test suite (SQLite; PostgreSQL tests skip with a reason)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: demo test test-postgres test-matrix clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "django-clerk-sync needs Python 3.10 or newer: run make PYTHON=python3.1x ...")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
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

# Every supported Python x Django combination installed here (see tox.ini).
test-matrix: $(VENV)/.installed
	$(PY) -m pip install --quiet tox
	$(VENV)/bin/tox

clean:
	rm -rf $(VENV) .tox build dist *.egg-info .pytest_cache example_project/db.sqlite3
