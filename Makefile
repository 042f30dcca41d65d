# The project's interface: `make help` lists every target.
# Every target that needs Python builds .venv/ from the pinned requirements on
# first use, so a fresh clone needs no setup step. Targets honour DATABASE_URL.
#
# make runs in the project folder (make -C <folder> from anywhere). Paths stay
# relative: make splits targets on spaces, so an absolute path in a folder such
# as "My Projects" would break every rule. Tools run as `python -m`, never
# through a venv script, whose shebang would hold the absolute path.
ifeq ($(wildcard alembic.ini),)
$(error run make in the project folder, or from anywhere with: make -C <project folder> <target>)
endif

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := "$(BIN)/python"
ALEMBIC := $(PY) -m alembic -c alembic.ini
# The project's commands (dbtools/commands/), one per target that opens a database.
CLI := $(PY) -m dbtools
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed
BENCH := $(VENV)/.bench-installed
# A make value as one shell word, exactly as typed: msg='costs $5' keeps its $5.
quote = '$(subst ','\'',$(1))'

.DEFAULT_GOAL := help
.PHONY: help install upgrade downgrade migration check status verify repair rehearse restore current history sql stamp schema test lint bench bench-online clean

help: ## List the targets
	@echo "Usage: make <target> [rev=...] [msg=...]   (DATABASE_URL overrides sqlite:///app.db)"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(DEV) ## Create .venv/ with the pinned runtime, test and lint tools

upgrade: $(RUNTIME) ## Apply pending migrations (rev=<target>, default head); creates app.db
	@$(CLI) upgrade $(or $(rev),head)

downgrade: $(RUNTIME) ## Revert one migration (rev=<target> for any other, e.g. rev=base)
	@$(CLI) downgrade $(or $(rev),-1)

migration: $(DEV) ## Autogenerate a migration from the models: msg="what changed" [renames="t.old=new"]
	@test -n $(call quote,$(value msg)) || { echo 'usage: make migration msg="describe the change"' >&2; exit 2; }
	@$(CLI) migration --message=$(call quote,$(value msg)) --renames=$(call quote,$(value renames))

check: $(RUNTIME) ## Fail if the models differ from the migrated database
	@$(CLI) check

status: $(RUNTIME) ## Every migration, applied or pending, its checksum, and model drift
	@$(CLI) status

verify: $(RUNTIME) ## Fail if an applied migration was edited, deleted or never recorded
	@$(CLI) verify

repair: $(RUNTIME) ## Show how applied migrations differ from their files, then re-record them
	@$(CLI) repair

rehearse: $(RUNTIME) ## Run pending migrations (rev=<target>) for real, time each, roll back
	@$(CLI) rehearse $(rev)

restore: $(RUNTIME) ## Replace the SQLite database with its newest backup (file=<backup>)
	@$(CLI) restore $(if $(value file),$(call quote,$(value file)))

current: $(RUNTIME) ## Show the database's revision
	@$(CLI) current

history: $(RUNTIME) ## List the migrations, newest first
	@$(ALEMBIC) history

sql: $(RUNTIME) ## Print the upgrade SQL without connecting (rev=<target>, default head)
	@$(ALEMBIC) upgrade $(or $(rev),head) --sql

stamp: $(RUNTIME) ## Adopt a database made without migrations, if it matches the models
	@$(CLI) stamp

schema: $(RUNTIME) ## Rewrite schema/*.sql, the DDL at head (starts a throwaway PostgreSQL)
	@$(CLI) schema

test: $(DEV) ## Run the test suite
	@$(PY) -m pytest

lint: $(DEV) ## ruff, mypy, and each migration's data-loss and PostgreSQL lock review (squawk)
	@$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy
	@$(CLI) lint

bench: $(DEV) ## Measure costs against their floors (n=rows, default 1000000; repeat=5; tests=0)
	@$(PY) -m bench --rows $(or $(n),1000000) --repeat $(or $(repeat),5) --tests $(or $(tests),1)

bench-online: $(BENCH) ## Each change under live traffic, plain against online (n=1000000 rows, repeat=3)
	@$(PY) -m bench.online --rows $(or $(n),1000000) --repeat $(or $(repeat),3)

clean: ## Remove .venv/ and caches (never the database)
	rm -rf "$(VENV)" .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

$(RUNTIME): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "FAILED: Python >= 3.11 is needed as '$(PYTHON)'; install it, or run make PYTHON=python3.12 ..." >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv "$(VENV)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch "$@"

$(DEV): $(RUNTIME) requirements-dev.txt
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch "$@"

$(BENCH): $(DEV) requirements-bench.txt
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	@touch "$@"
