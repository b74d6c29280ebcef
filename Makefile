# Two commands on a fresh machine: `make run` and `make test` (Python 3.11, node/npm, make, git).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

# One Prefect home inside the project, so `make ui` shows the runs of `make run`.
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export GX_ANALYTICS_ENABLED := false

UI_PORT ?= 4200
ARGS ?=
# `make deploy` and `make worker` talk to the `make ui` server, or to $PREFECT_API_URL if set.
API_URL ?= $(or $(PREFECT_API_URL),http://127.0.0.1:$(UI_PORT)/api)
POOL := digits-pool# the work pool named in prefect.yaml

.PHONY: run test test-fast ui deploy worker bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)  ## one retraining run on the embedded default (ephemeral Prefect, SQLite)
	$(BIN)/digits run $(ARGS)

test: $(STAMP)  ## the whole suite: unit, data, flow, model, integration
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)  ## unit tests only, seconds
	$(BIN)/python -m pytest -m "not slow and not data and not integration" $(ARGS)

ui: $(STAMP)  ## the Prefect UI on 127.0.0.1 over this project's runs
	PREFECT_UI_API_URL=http://127.0.0.1:$(UI_PORT)/api $(BIN)/prefect server start --host 127.0.0.1 --port $(UI_PORT)

deploy worker: export PREFECT_API_URL := $(API_URL)
worker: export DIGITS_PROJECT_DIR := $(CURDIR)# prefect.yaml's pull step runs flows from here

deploy: $(STAMP)  ## register prefect.yaml (weekly retraining) on the server; creates the pool
	@$(BIN)/python -c "import urllib.request as u; u.urlopen('$(API_URL)/health', timeout=10)" \
	  2>/dev/null || { echo "no Prefect server at $(API_URL): start one with 'make ui'"; exit 2; }
	$(BIN)/prefect work-pool inspect $(POOL) >/dev/null 2>&1 \
	  || $(BIN)/prefect work-pool create $(POOL) --type process
	$(BIN)/prefect --no-prompt deploy --all

worker: $(STAMP)  ## run the pool's scheduled flow runs from this checkout, one at a time
	$(BIN)/prefect worker start --pool $(POOL) --limit 1

bench: $(STAMP)  ## benchmarks/results.md figures on this machine
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .prefect .pytest_cache
