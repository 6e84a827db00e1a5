# Two commands matter: `make up` starts the platform, `make test` runs the test suite.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test check gen lint typecheck contracts bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/nango up

test: $(STAMP)
	scripts/test.sh

check: $(STAMP) lint typecheck contracts

lint: $(STAMP)
	$(BIN)/ruff check nango tests bench scripts
	$(BIN)/ruff format --check nango tests bench scripts
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/buf lint
	$(BIN)/buf breaking --against contracts/released.binpb
	$(BIN)/python scripts/gen_proto.py --check

gen: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

bench: $(STAMP)
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
