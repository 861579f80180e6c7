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

test: install
	bash tests/ensure_system_packages.sh
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n auto --maxprocesses 4 --dist loadfile

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/tracehouse bench
