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
# What is typed after a target (rev=, msg=, renames=, file=, onto=, out_of_order=, phase=, fleet=, report=,
# upto=, prune=, allow_data_loss=)
# reaches the command as one argument, exactly as typed: $5, quotes, `;` and newlines included. It goes
# through the environment, which the shell never parses; exporting expands $(value x) once.
export DBTOOLS_REV = $(value rev)
export DBTOOLS_MSG = $(value msg)
export DBTOOLS_RENAMES = $(value renames)
export DBTOOLS_FILE = $(value file)
export DBTOOLS_ONTO = $(value onto)
export DBTOOLS_OUT_OF_ORDER = $(value out_of_order)
export DBTOOLS_PHASE = $(value phase)
export DBTOOLS_FLEET = $(value fleet)
export DBTOOLS_REPORT = $(value report)
export DBTOOLS_UPTO = $(value upto)
export DBTOOLS_PRUNE = $(value prune)
export DBTOOLS_ALLOW_DATA_LOSS = $(value allow_data_loss)

# fleet= and report= go with upgrade, status, check and verify. Any other target that opens a
# database refuses them: it would ignore them and act on DATABASE_URL's one database instead.
NO_FLEET = @test -z "$$DBTOOLS_FLEET$$DBTOOLS_REPORT" || { echo "FAILED: make $@ takes no fleet= or \
report= (upgrade, status, check and verify do); nothing was run" >&2; exit 2; }

.DEFAULT_GOAL := help
.PHONY: help install upgrade downgrade migration rebase squash check status verify repair rehearse restore current history sql stamp schema test lint bench bench-online bench-expand bench-autogenerate bench-fleet clean

# Each target's summary lives in dbtools/catalog.py, shared with python -m dbtools --help.
help:
	@$(PYTHON) -m dbtools.catalog

install: $(DEV)

upgrade: $(RUNTIME)
	@$(CLI) upgrade "$${DBTOOLS_REV:-head}" $${DBTOOLS_OUT_OF_ORDER:+--out-of-order="$$DBTOOLS_OUT_OF_ORDER"} \
		$${DBTOOLS_PHASE:+--phase="$$DBTOOLS_PHASE"} \
		$${DBTOOLS_FLEET:+--fleet="$$DBTOOLS_FLEET"} $${DBTOOLS_REPORT:+--report="$$DBTOOLS_REPORT"}

downgrade: $(RUNTIME)
	$(NO_FLEET)
	@$(CLI) downgrade "$${DBTOOLS_REV:--1}"

migration: $(DEV)
	$(NO_FLEET)
	@test -n "$$DBTOOLS_MSG" || { echo 'usage: make migration msg="describe the change"' >&2; exit 2; }
	@$(CLI) migration --message="$$DBTOOLS_MSG" --renames="$$DBTOOLS_RENAMES"

# Needs ruff (DEV): the re-pointed migration is formatted as make migration leaves one.
rebase: $(DEV)
	$(NO_FLEET)
	@$(CLI) rebase $${DBTOOLS_ONTO:+--onto="$$DBTOOLS_ONTO"}

# Needs ruff (DEV), as make migration: the squash is formatted as a migration it writes.
squash: $(DEV)
	$(NO_FLEET)
	@$(CLI) squash --upto="$$DBTOOLS_UPTO" --prune="$${DBTOOLS_PRUNE:-0}" --allow-data-loss="$${DBTOOLS_ALLOW_DATA_LOSS:-0}"

check: $(RUNTIME)
	@$(CLI) check $${DBTOOLS_FLEET:+--fleet="$$DBTOOLS_FLEET"} $${DBTOOLS_REPORT:+--report="$$DBTOOLS_REPORT"}

status: $(RUNTIME)
	@$(CLI) status $${DBTOOLS_FLEET:+--fleet="$$DBTOOLS_FLEET"} $${DBTOOLS_REPORT:+--report="$$DBTOOLS_REPORT"}

verify: $(RUNTIME)
	@$(CLI) verify $${DBTOOLS_FLEET:+--fleet="$$DBTOOLS_FLEET"} $${DBTOOLS_REPORT:+--report="$$DBTOOLS_REPORT"}

repair: $(RUNTIME)
	$(NO_FLEET)
	@$(CLI) repair

rehearse: $(RUNTIME)
	$(NO_FLEET)
	@$(CLI) rehearse $${DBTOOLS_REV:+"$$DBTOOLS_REV"}

restore: $(RUNTIME)
	$(NO_FLEET)
	@$(CLI) restore $${DBTOOLS_FILE:+"$$DBTOOLS_FILE"}

current: $(RUNTIME)
	$(NO_FLEET)
	@$(CLI) current

history: $(RUNTIME)
	@$(ALEMBIC) history

sql: $(RUNTIME)
	@$(ALEMBIC) upgrade "$${DBTOOLS_REV:-head}" --sql

stamp: $(RUNTIME)
	$(NO_FLEET)
	@$(CLI) stamp

schema: $(DEV)
	@$(CLI) schema

test: $(DEV)
	@$(PY) -m pytest

lint: $(DEV)
	@$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy
	@$(CLI) lint

bench: $(DEV)
	@$(PY) -m bench --rows $(or $(n),1000000) --repeat $(or $(repeat),5) --tests $(or $(tests),1)

bench-online: $(BENCH)
	@$(PY) -m bench.online --rows $(or $(n),1000000) --repeat $(or $(repeat),3)

bench-expand: $(BENCH)
	@$(PY) -m bench.expand --rows $(or $(n),1000000)

bench-autogenerate: $(DEV)
	@$(PY) -m bench.autogenerate --repeat $(or $(repeat),9)

bench-fleet: $(BENCH)
	@$(PY) -m bench.fleet --schemas $(or $(schemas),300) --files $(or $(files),1000) --repeat $(or $(repeat),1)

clean:
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
