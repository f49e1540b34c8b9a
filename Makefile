# Short targets: serve, test, lint, bench. Each creates or reuses .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The real OPA, the referee for the policy: built from source into a project-local directory,
# only when missing. The tests find it here (or at $WARDFN_OPA_BIN).
OPA_VERSION := v1.22.3
TOOLS := $(CURDIR)/.wardfn/tools/bin
OPA := $(TOOLS)/opa

.PHONY: install serve test lint policy-check opa clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

opa: $(OPA)

$(OPA):
	@command -v go >/dev/null 2>&1 || { echo "error: building OPA $(OPA_VERSION) needs Go (https://go.dev/dl/); install it or put an opa $(OPA_VERSION) binary at $(OPA)" >&2; exit 1; }
	@mkdir -p $(TOOLS)
	@echo "building OPA $(OPA_VERSION) into $(TOOLS) (once; a few minutes)"
	GOBIN=$(TOOLS) go install github.com/open-policy-agent/opa@$(OPA_VERSION) || { echo "error: could not build OPA $(OPA_VERSION): check that the Go module proxy is reachable" >&2; exit 1; }
	@$(OPA) version | grep -q "Version: $(patsubst v%,%,$(OPA_VERSION))" || { echo "error: $(OPA) is not OPA $(OPA_VERSION)" >&2; exit 1; }

serve: install
	$(BIN)/wardfn serve

# The policy's own checks, by the real OPA: strict compilation and the Rego unit tests.
policy-check: $(OPA)
	$(OPA) check --strict policies
	$(OPA) test policies

test: lint policy-check
	WARDFN_OPA_BIN=$(OPA) $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check host tests functions
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .wardfn .pytest_cache
