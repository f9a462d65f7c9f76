# Two commands for a new user: `make run` (serve on embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch; GPU users can pass another spec, e.g. make install TORCH_SPEC="torch==2.13.0+cu128 --extra-index-url <their index>".
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# Test processes (pytest-xdist): one per core by default; each test file runs whole in one of them, so a file's
# servers and browsers start once; the dearest files go first (tests/conftest.py orders them). TEST_WORKERS=0 runs
# everything in this process.
TEST_WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
# make run PORT=8080 DATA_DIR=/srv/support-bot serves on another port and keeps its data elsewhere; left empty, the
# settings (SUPPORT_BOT_* env, .env) decide, as with a plain make run.
PORT ?=
DATA_DIR ?=
# models pull needs the data dir too: the weights live under <data_dir>/models by default.
RUN_ENV := $(if $(DATA_DIR),SUPPORT_BOT_DATA_DIR='$(DATA_DIR)' )
STAMP := $(VENV)/.installed
# axe-core for the browser tests' accessibility checks, pinned in tests/e2e/package-lock.json.
AXE := tests/e2e/node_modules/axe-core/axe.min.js

.PHONY: install run test test-fast bench lint clean screenshots

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

run: install
	$(RUN_ENV)$(BIN)/support-bot models pull
	$(RUN_ENV)$(BIN)/support-bot serve --seed$(if $(PORT), --port $(PORT))

test: install $(AXE)
	$(PYTEST) $(PYTEST_ARGS)

$(AXE): tests/e2e/package.json tests/e2e/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the browser tests' axe-core (apt-get install npm)" >&2; exit 1; }
	cd tests/e2e && npm ci --no-audit --no-fund
	touch $(AXE)

# The fast unit layer only (no real models, no browser).
test-fast: install
	$(PYTEST) -m "not slow and not browser" $(PYTEST_ARGS)

# The layering contracts alone (make test runs them too, in tests/test_architecture.py).
lint: install
	$(BIN)/lint-imports

# PNGs of the widget and every console page (demo FAQ, fake LLM, Debian's Chromium) in screenshots/.
screenshots: install
	$(BIN)/python scripts/screenshots.py --out screenshots

bench: install
	$(BIN)/python bench/ingest.py --n 2000
	$(BIN)/python bench/retrieval.py --n 100000

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
