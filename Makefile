# Two commands on a fresh machine: `make run` and `make test` (Python 3.11-3.13, node/npm, make).
# The venv's interpreter: PYTHON if given, else the newest of python3.13, python3.12,
# python3.11 on PATH that runs (a pyenv shim for a version not selected does not), else
# python3. FOUND is its path, or "!found VERSION at PATH" when it is not 3.11-3.13.
SUPPORTED := 3.11-3.13
CANDIDATES = $(or $(PYTHON),python3.13 python3.12 python3.11 python3)
FOUND = $(shell for p in $(CANDIDATES); do \
  v=$$($$p -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || continue; \
  case $$v in (3.1[123].*) command -v $$p;; (*) echo "!found $$v at $$(command -v $$p)";; esac; \
  exit; done; echo "!found none that runs of $(CANDIDATES)")
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

# One Prefect home inside the project, so `make ui` shows the runs of `make run`: the one
# `digits` itself defaults to (./.prefect where it runs); an exported PREFECT_HOME wins in both.
export PREFECT_HOME ?= $(CURDIR)/.prefect
# Runs a command with the environment defaults of digits/environment.py (ENV_DEFAULTS: no
# analytics, no TensorFlow C++ log lines, ...), their one home; the caller's values win.
# `digits` applies them itself.
WITH_DEFAULTS = $(BIN)/python -m digits.environment

UI_PORT ?= 4200
ARGS ?=
# `make ui` writes the API URL it serves here while it runs, so `make deploy` and
# `make worker` find it whatever its UI_PORT; $PREFECT_API_URL or a UI_PORT given to them wins.
UI_URL_FILE := $(PREFECT_HOME)/ui-url
REMEMBERED_API = $(if $(filter file,$(origin UI_PORT)),$(shell cat $(UI_URL_FILE) 2>/dev/null))
API_URL ?= $(or $(PREFECT_API_URL),$(REMEMBERED_API),http://127.0.0.1:$(UI_PORT)/api)
POOL = $(shell $(BIN)/python -m flows.schedule pool)# flows/schedule.py is its one home
# Prefect's hint after deploy names a bare `prefect worker start`, which lacks what
# `make worker` sets: say `make worker` instead.
WORKER_HINT := sed -e "/To execute flow runs from these deployments/,/prefect worker start --pool/c \
  To run them, start a worker in another terminal: make worker"

.PHONY: run test test-fast ui api-up deploy worker bench clean

$(STAMP): pyproject.toml constraints.txt
	$(if $(findstring !,$(FOUND)),$(error needs Python $(SUPPORTED); $(subst !,,$(FOUND))))
	test -x $(BIN)/python || $(FOUND) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[pipeline,dev]'
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)  ## one retraining run on the embedded default (ephemeral Prefect, SQLite)
	$(BIN)/digits run $(ARGS)

# A worker per core and two more: the suite spends a fifth of its time waiting (on servers
# it started, a trigger's window, the package index), not computing, and the extra workers
# compute meanwhile (on 2 cores, 3 workers: 10 min 53 s; 4: 10 min 31-40 s; 5: 10 min 54 s).
# A test file stays on one worker, so a module's server starts once; files go out in
# tests/conftest.py's order (FIRST_TO_LAST, then LONGEST_UNIT_FILES).
WORKERS ?= $(shell echo $$(( $$(nproc) + 2 )))
test: $(STAMP)  ## the whole suite: unit, data, flow, model, integration
	$(WITH_DEFAULTS) $(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder $(ARGS)

test-fast: $(STAMP)  ## the unit tests not marked slow, after every edit (1-2 min on 2 cores)
	$(WITH_DEFAULTS) $(BIN)/python -m pytest tests/unit -m "not slow" -n auto $(ARGS)

ui: $(STAMP)  ## the Prefect UI on 127.0.0.1 over this project's runs
	@mkdir -p $(PREFECT_HOME) && echo http://127.0.0.1:$(UI_PORT)/api > $(UI_URL_FILE)
	trap 'rm -f $(UI_URL_FILE)' EXIT; trap 'exit 130' INT TERM; \
	PREFECT_UI_API_URL=http://127.0.0.1:$(UI_PORT)/api $(WITH_DEFAULTS) $(BIN)/prefect server start --host 127.0.0.1 --port $(UI_PORT)

deploy worker: export PREFECT_API_URL := $(API_URL)
worker: export DIGITS_PROJECT_DIR := $(CURDIR)# prefect.yaml's pull step runs flows from here

api-up: $(STAMP)
	@$(BIN)/python -c "import urllib.request as u; u.urlopen('$(API_URL)/health', timeout=10)" \
	  2>/dev/null || { echo "no Prefect server at $(API_URL): start one with 'make ui'" \
	  "(UI_PORT=N for another port), or set PREFECT_API_URL to the server's API" >&2; exit 2; }

# Deploying fixes prefect.yaml's store and registry: $DIGITS_DATA and $DIGITS_REGISTRY, else
# data/ and artifacts/registry here, absolute (flows/schedule.py, FOLDERS). The store must
# exist where a run runs (a worker without it fails the run), so it is made here.
deploy: api-up  ## register prefect.yaml (weekly retraining) on the server; creates the pool
	@echo "Prefect API: $(API_URL)"
	@$(BIN)/prefect work-pool inspect $(POOL) >/dev/null 2>&1 \
	  || { $(BIN)/prefect work-pool create $(POOL) --type process >/dev/null \
	       && echo "Created work pool $(POOL) (type process)."; }
	@export DIGITS_DATA="$$($(BIN)/python -m flows.schedule store)" \
	  DIGITS_REGISTRY="$$($(BIN)/python -m flows.schedule registry)"; \
	  mkdir -p "$$DIGITS_DATA" && echo "Store: $$DIGITS_DATA; registry: $$DIGITS_REGISTRY"; \
	  log=$$(mktemp); COLUMNS=120 $(WITH_DEFAULTS) $(BIN)/prefect --no-prompt deploy --all >$$log 2>&1; \
	  status=$$?; $(WORKER_HINT) $$log; rm -f $$log; exit $$status

worker: api-up  ## run the pool's scheduled flow runs from this checkout, one at a time
	@echo "Prefect API: $(API_URL)"
	$(WITH_DEFAULTS) $(BIN)/prefect worker start --pool $(POOL) --limit 1

bench: $(STAMP)  ## benchmarks/results.md figures on this machine
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .prefect .pytest_cache
