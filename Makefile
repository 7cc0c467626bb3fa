# Every target installs what it needs into ./.venv first. `make test` also installs Podman,
# Chromium with its driver and the PostgreSQL server (from Debian packages, when missing), Azurite
# (npm, into ./.azurite), Pyodide with the Worker's wheels (npm and PyPI, into ./.pyodide) and
# wrangler with tsc (npm, into infra/cloudflare/node_modules, plus a Node 22 into ./.cloudflare if
# needed) for the tests on real parts.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# the cloud extras too: their stores, backends and handlers are tested (and type-checked) here
EXTRAS := dev,aws,azure,gcp,kubernetes,postgres
AZURITE_DIR := .azurite
AZURITE_STAMP := $(AZURITE_DIR)/.installed-stamp

.PHONY: setup run test lint format bench stress clean azurite pyodide cloudflare cloudflare-build

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing bot-scheduler and its dev tools into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $(STAMP)

setup: $(STAMP)

# the demo bots report their status to the server itself: SCHEDULER_PUBLIC_URL, when unset, is
# its own address (only on loopback with PLATFORM=process; a value you set is kept)
run: setup
	$(BIN)/botsched serve --own-public-url

# Azurite (npm) for the Azure Table store tests: installed once into ./.azurite
$(AZURITE_STAMP):
	@command -v npm >/dev/null || { echo "npm is needed for the Azure Table tests (Azurite)"; exit 1; }
	@echo "installing Azurite into $(AZURITE_DIR) ..."
	@npm install --prefix $(AZURITE_DIR) --no-audit --no-fund --loglevel=error azurite@3
	@touch $(AZURITE_STAMP)

azurite: $(AZURITE_STAMP)

# Pyodide (npm) and the wheels the Cloudflare Worker runs on, into ./.pyodide (once)
pyodide: setup
	$(BIN)/python -m tests.pyodide_env

# wrangler, tsc and a Node >= 22.12 for the Cloudflare tests, once (tests/cloudflare/toolchain.py)
cloudflare: setup
	$(BIN)/python -m tests.cloudflare.toolchain

# the Python Worker's modules (core/, handlers/) into infra/cloudflare/scheduler/build/; wrangler
# runs this itself before a deploy
cloudflare-build:
	$(PYTHON) scripts/build-cloudflare-worker.py

test: setup azurite pyodide cloudflare
	bash scripts/podman-test-env.sh install
	bash scripts/browser-test-env.sh install
	bash scripts/postgres-test-env.sh install
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# the table of README's "Performance": installs wrk (Debian's) when missing; Azurite and the
# Firestore emulator as `make test` has them
bench: setup azurite
	bash scripts/bench-env.sh install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# the big stress run per store (bench/stress.py --help); e.g. make stress STRESS_ARGS='--store sqlite'
stress: setup
	$(BIN)/python bench/stress.py $(STRESS_ARGS)

clean:
	rm -rf $(VENV) $(AZURITE_DIR) .pyodide .pytest_cache .mypy_cache .ruff_cache *.egg-info
	rm -rf .cloudflare infra/cloudflare/node_modules infra/cloudflare/scheduler/build
