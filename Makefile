# The two commands a newcomer needs: `make run` and `make test`.
# Each creates the virtual environment from the lock file when it is missing or out of date.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint demo lock migration clean

run: $(VENV)/.run-installed
	$(BIN)/lers serve

# The two halves run side by side (most of a test's time is spent waiting on gpg, sockets and
# subprocesses): the PostgreSQL half's report is printed after the SQLite half's.
test: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	@LERS_TEST_BACKEND=postgresql $(BIN)/pytest > .pytest-postgresql.log 2>&1 & postgresql=$$!; \
	$(BIN)/pytest; sqlite=$$?; \
	wait $$postgresql; pg=$$?; \
	echo "---- the PostgreSQL half (LERS_TEST_BACKEND=postgresql pytest):"; cat .pytest-postgresql.log; \
	test $$sqlite -eq 0 && test $$pg -eq 0

# Send the README's example request to a running gateway and print its acknowledgement.
demo: $(VENV)/.run-installed
	$(BIN)/python examples/send_request.py

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-installed: requirements.lock pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev-installed: requirements-dev.lock pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@ $(VENV)/.run-installed

# Refresh the lock files after changing dependencies in pyproject.toml.
lock:
	$(PYTHON) -m venv /tmp/lers-piptools && /tmp/lers-piptools/bin/pip install --quiet pip-tools
	/tmp/lers-piptools/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe -o requirements.lock pyproject.toml
	/tmp/lers-piptools/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --extra dev -o requirements-dev.lock pyproject.toml

# After changing gateway/models.py: write the next migration, e.g. make migration MSG="add x"
migration: $(VENV)/.dev-installed
	$(BIN)/python -m gateway.migrations.new "$(MSG)"

clean:
	rm -rf $(VENV)
