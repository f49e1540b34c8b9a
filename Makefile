# Short targets: serve, test, lint, bench. Each creates or reuses .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

serve: install
	$(BIN)/wardfn serve

test: lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check host tests functions bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .wardfn .pytest_cache

# Microbenchmarks (pytest-benchmark): the parts of one invocation, on their own. Not part of `make test`.
bench: install
	$(BIN)/python -m pytest bench -q -p no:cacheprovider --benchmark-columns=min,median,mean,max,rounds --benchmark-sort=name
