# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint mutate clean lab lab-down lab-clean lab-check

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
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml lab/publish.yml lab/attack.yml lab/attack-oob.yml
	$(BIN)/hadolint Dockerfile
	$(BIN)/shellcheck lab/compose lab/*.sh lab/bin/*

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

# The docker-compose lab (lab/README.md): `make lab` builds the image from a wheelhouse
# made here and starts the lab, `make lab-down` stops it (keys and captures stay),
# `make lab-clean` also removes its volumes. BASE_IMAGE=... builds on another base
# (lab/offline-base.sh makes one without a registry); ATTACK=1 adds mallory, the man in
# the middle (lab/attack.yml), ATTACK=oob puts it on the MQTT channel too; PUBLISH=1 also publishes the
# server's port on 127.0.0.1 (lab/publish.yml). The settings live in .env, written
# from lab/env.example on first use: the lab runs as you, so captures/ is yours; as
# root it runs as 1000:1000 and captures/ is handed to that user (the lab grants no
# capability that tcpdump started as root would want).
COMPOSE     := lab/compose
LAB_FILES   := -f docker-compose.yml $(if $(PUBLISH),-f lab/publish.yml) \
               $(if $(ATTACK),-f lab/attack.yml) $(if $(filter oob,$(ATTACK)),-f lab/attack-oob.yml)
ALL_FILES   := -f docker-compose.yml -f lab/publish.yml -f lab/attack.yml -f lab/attack-oob.yml
LAB_UID     := $(shell id -u)
LAB_GID     := $(if $(filter 0,$(LAB_UID)),1000,$(shell id -g))
LAB_UID     := $(if $(filter 0,$(LAB_UID)),1000,$(LAB_UID))
LAB_ENV      = $(if $(BASE_IMAGE),BASE_IMAGE=$(BASE_IMAGE))
LAB_MISSING  = $(shell $(COMPOSE) --check 2>&1 >/dev/null)

lab-check:
	$(if $(LAB_MISSING),$(error $(LAB_MISSING)))
	@:

lab/wheels/.built: pyproject.toml README.md $(wildcard */*.py) | $(STAMP)
	lab/wheelhouse.sh $(BIN)/python lab/wheels
	touch $@

.env:
	sed -e 's/^KEXLAB_UID=.*/KEXLAB_UID=$(LAB_UID)/' -e 's/^KEXLAB_GID=.*/KEXLAB_GID=$(LAB_GID)/' lab/env.example >$@
	@[ "$$(id -u)" != 0 ] || chown $(LAB_UID):$(LAB_GID) captures

lab: lab-check .env lab/wheels/.built
	$(LAB_ENV) $(COMPOSE) $(LAB_FILES) build
	$(LAB_ENV) $(COMPOSE) $(LAB_FILES) up -d
	@$(COMPOSE) $(LAB_FILES) ps
	@echo "lab is up: docker compose run --rm client kexlab client server --kex dhe --send hello (lab/README.md)"

lab-down: lab-check
	$(COMPOSE) $(ALL_FILES) down --remove-orphans

lab-clean: lab-check
	$(COMPOSE) $(ALL_FILES) down -v --remove-orphans

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .hypothesis mutants
