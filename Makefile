# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint mutate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kexlab demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check protocol tests
	$(BIN)/mypy --strict protocol

test: lint
	$(BIN)/python -m pytest -W error --cov=protocol --cov-report=term-missing $(PYTEST_ARGS)

# Mutation testing, by hand and not in CI (docs/testing.md): mutmut mutates MUTATE_FILES, then
# mutation/run.py prints killed/total per file and fails on a survivor that
# mutation/equivalents.toml does not explain. MUTATE_ARGS: e.g. --jobs 2, --report-only.
MUTATE_FILES ?= protocol/frames.py protocol/records.py protocol/keyschedule.py protocol/server_connection.py
MUTATE_STAMP := $(VENV)/.mutation-installed

$(MUTATE_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,mutation]'
	touch $(MUTATE_STAMP)

mutate: $(MUTATE_STAMP)
	$(BIN)/python mutation/run.py $(MUTATE_ARGS) $(MUTATE_FILES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .hypothesis mutants
