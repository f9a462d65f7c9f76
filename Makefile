# Two commands for a new user: `make run` (serve on embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch; GPU users can pass another spec, e.g. make install TORCH_SPEC="torch==2.13.0+cu128 --extra-index-url <their index>".
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# make run PORT=8080 DATA_DIR=/srv/support-bot serves on another port and keeps its data elsewhere; left empty, the
# settings (SUPPORT_BOT_* env, .env) decide, as with a plain make run.
PORT ?=
DATA_DIR ?=
# models pull needs the data dir too: the weights live under <data_dir>/models by default.
RUN_ENV := $(if $(DATA_DIR),SUPPORT_BOT_DATA_DIR='$(DATA_DIR)' )
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast bench lint clean

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

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast unit layer only (no real models, no browser).
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

# The layering contracts alone (make test runs them too, in tests/test_architecture.py).
lint: install
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/ingest.py --n 2000
	$(BIN)/python bench/retrieval.py --n 100000

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
