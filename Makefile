# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint clean lab lab-down lab-clean lab-check

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
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml lab/publish.yml
	$(BIN)/hadolint Dockerfile
	$(BIN)/shellcheck lab/compose lab/*.sh lab/bin/*

test: lint
	$(BIN)/python -m pytest -W error --cov=protocol --cov-report=term-missing $(PYTEST_ARGS)

# The docker-compose lab (lab/README.md): `make lab` builds the image from a wheelhouse
# made here and starts the lab, `make lab-down` stops it (keys and captures stay),
# `make lab-clean` also removes its volumes. BASE_IMAGE=... builds on another base
# (lab/offline-base.sh makes one without a registry); PUBLISH=1 also publishes the
# server's port on 127.0.0.1 (lab/publish.yml). Everything runs as you, so captures/
# is yours.
COMPOSE     := lab/compose
LAB_FILES   := -f docker-compose.yml $(if $(PUBLISH),-f lab/publish.yml)
ALL_FILES   := -f docker-compose.yml -f lab/publish.yml
LAB_ENV      = KEXLAB_UID=$$(id -u) KEXLAB_GID=$$(id -g) $(if $(BASE_IMAGE),BASE_IMAGE=$(BASE_IMAGE))
LAB_MISSING  = $(shell $(COMPOSE) --check 2>&1 >/dev/null)

lab-check:
	$(if $(LAB_MISSING),$(error $(LAB_MISSING)))
	@:

lab/wheels/.built: pyproject.toml README.md $(wildcard */*.py) | $(STAMP)
	lab/wheelhouse.sh $(BIN)/python lab/wheels
	touch $@

lab: lab-check lab/wheels/.built
	$(LAB_ENV) $(COMPOSE) $(LAB_FILES) build
	$(LAB_ENV) $(COMPOSE) $(LAB_FILES) up -d
	@$(COMPOSE) $(LAB_FILES) ps
	@echo "lab is up: docker compose run --rm client kexlab client server --kex dhe --send hello (lab/README.md)"

lab-down: lab-check
	$(COMPOSE) $(ALL_FILES) down --remove-orphans

lab-clean: lab-check
	$(COMPOSE) $(ALL_FILES) down -v --remove-orphans

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .hypothesis
