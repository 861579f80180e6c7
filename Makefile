# Two entry points for a fresh machine (README): `make dev` and `make test`.
PYTHON ?= python3
PORT ?= 3000
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install dev test lint bench

$(BIN)/tracehouse: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/tracehouse

dev: install
	$(BIN)/tracehouse dev --port $(PORT)

# One worker more than cores (at most 4): the tests wait on servers and subprocesses part of the time;
# on 2 cores 3 workers took 744 s where 2 took 899 s. Tests are handed out one at a time (--dist loadgroup;
# test_ui's two share a worker): 506 s where whole files per worker (loadfile) took 571 s, same machine.
test: install
	bash tests/ensure_system_packages.sh
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n $$(( $$(nproc) + 1 )) --maxprocesses 4 --dist loadgroup --durations=10

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/tracehouse bench
