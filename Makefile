# Short targets: serve, test, lint, bench, docs. Each creates or reuses .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tools the tests run, installed into the project (.wardfn/tools/bin) only when missing.
TOOLS := .wardfn/tools
TOOLS_BIN := $(TOOLS)/bin
# The real OPA, the referee for the policy: built from source, found by the tests here (or at
# $WARDFN_OPA_BIN).
OPA_VERSION := v1.22.3
OPA := $(CURDIR)/$(TOOLS_BIN)/opa
KUSTOMIZE_VERSION := v5.5.0
GATEKEEPER_VERSION := v3.23.1
ORAS_VERSION := v1.2.0
# RabbitMQ for the audit relay's tests: Debian's rabbitmq-server package (3.10 on bookworm). The tests
# start a private node of their own from these scripts (or from $WARDFN_RABBITMQ_BIN).
RABBITMQ_BIN ?= /usr/lib/rabbitmq/bin

# PostgreSQL's server binaries (initdb, pg_ctl, postgres, pg_dump), for the private clusters the
# tests start (tests/postgres_server.py): $WARDFN_PG_BIN if set, else the newest version installed,
# found at run time (after `make postgres` may have installed it).
PG_BIN_DIR = $${WARDFN_PG_BIN:-$$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

# `make serve HOST=0.0.0.0 PORT=9000`: where `wardfn serve` listens (else WARDFN_HOST and WARDFN_PORT,
# else 127.0.0.1:8000). HOST counts only on make's command line: tcsh exports HOST as the machine's
# name, which would quietly put the development server on the network.
SERVE_FLAGS = $(if $(filter command line,$(origin HOST)),--host '$(HOST)') $(if $(PORT),--port '$(PORT)')
# `make functions JOBS=1`: how many functions build at once (default: one per core, at most 4).
JOBS ?=

.PHONY: install serve test functions lint bench docs policy-check opa clean tools postgres rabbitmq chromium console-screenshots fuzz images images-lock

install: $(STAMP)

# pip's own lines are the progress: a fresh install downloads a few hundred MB (wasmtime,
# componentize-py, matplotlib...) and takes minutes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing wardfn and its dependencies into $(VENV) (minutes the first time)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev,bench]'
	@touch $(STAMP)

opa: $(OPA)

$(OPA):
	@command -v go >/dev/null 2>&1 || { echo "error: building OPA $(OPA_VERSION) needs Go (https://go.dev/dl/); install it or put an opa $(OPA_VERSION) binary at $(OPA)" >&2; exit 1; }
	@mkdir -p $(TOOLS_BIN)
	@echo "building OPA $(OPA_VERSION) into $(TOOLS_BIN) (once; a few minutes)"
	GOBIN=$(CURDIR)/$(TOOLS_BIN) go install github.com/open-policy-agent/opa@$(OPA_VERSION) || { echo "error: could not build OPA $(OPA_VERSION): check that the Go module proxy is reachable" >&2; exit 1; }
	@$(OPA) version | grep -q "Version: $(patsubst v%,%,$(OPA_VERSION))" || { echo "error: $(OPA) is not OPA $(OPA_VERSION)" >&2; exit 1; }

# Builds the functions that are not in the cache (a line each, with its time), seeds an empty
# development database, then serves.
serve: install
	@[ "$(origin HOST)" != environment ] || echo "make serve: ignoring HOST from the environment ($(HOST)); say \`make serve HOST=...\` or set WARDFN_HOST"
	$(BIN)/wardfn serve $(SERVE_FLAGS)

# The policy's own checks, by the real OPA: strict compilation and the Rego unit tests.
policy-check: $(OPA)
	$(OPA) check --strict policies
	$(OPA) test policies

# Every function the tests run (functions/ and tests/functions/), built into the tests' own cache
# (.wardfn/test-home) before the session, side by side, a line each: no test then waits for a build
# under pytest's 300 s per-test timeout (a build takes minutes on a busy machine).
functions: install
	$(BIN)/python -m tests.prebuild $(if $(JOBS),--jobs $(JOBS))

# WARDFN_TEST_FUNCTIONS_PREBUILT: a function missing from the cache then fails the session fixture
# instead of being built under a test's timeout.
test: lint tools policy-check postgres rabbitmq chromium functions
	WARDFN_TEST_FUNCTIONS_PREBUILT=1 WARDFN_OPA_BIN=$(OPA) WARDFN_PG_BIN=$(PG_BIN_DIR) WARDFN_RABBITMQ_BIN=$(RABBITMQ_BIN) $(BIN)/python -m pytest

# The OpenAPI fuzzer alone, with more examples than `make test` gives it (25 an operation):
# `make fuzz FUZZ_EXAMPLES=500`. schemathesis's engine, every check, against a real server.
FUZZ_EXAMPLES ?= 200
fuzz: install functions
	WARDFN_TEST_FUNCTIONS_PREBUILT=1 WARDFN_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/e2e/test_openapi.py

# Installed from Debian's package with apt-get, not unpacked into the project as promtool is: the
# server links a dozen shared libraries (ICU, LDAP, SSL, LLVM...) that only the package manager
# resolves, and the package makes the unprivileged `postgres` user the tests run the cluster as
# when they run as root (initdb and postgres refuse root). No system cluster is created (as in the
# official postgres image: postgresql-common first, create_main_cluster = false, then the server):
# the tests make their own, on a free loopback port, and remove it.
postgres:
	@if [ -z "$(PG_BIN_DIR)" ] || [ ! -x "$(PG_BIN_DIR)/initdb" ]; then \
		command -v apt-get >/dev/null || { echo "make postgres: the tests need PostgreSQL's server (initdb, postgres, pg_dump); apt-get is missing: install it, or set WARDFN_PG_BIN to its bin directory" >&2; exit 1; }; \
		[ "$$(id -u)" = 0 ] || { echo "make postgres: installing PostgreSQL needs root: run \`sudo apt-get install -y --no-install-recommends postgresql\`" >&2; exit 1; }; \
		echo "installing PostgreSQL's server from Debian's postgresql package (once)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get install -y --no-install-recommends postgresql-common \
			|| { apt-get update && apt-get install -y --no-install-recommends postgresql-common; }; } \
			|| { echo "make postgres: apt-get could not install postgresql-common: check that Debian's registry is reachable" >&2; exit 1; }; \
		sed -ri 's/^#?(create_main_cluster) .*$$/\1 = false/' /etc/postgresql-common/createcluster.conf; \
		apt-get install -y --no-install-recommends postgresql \
			|| { echo "make postgres: apt-get could not install postgresql: check that Debian's registry is reachable" >&2; exit 1; }; \
	fi

# The console's browser test (tests/e2e/test_console_browser.py) drives Debian's chromium headless
# through chromium-driver's WebDriver endpoint: both from Debian's packages, installed only when missing.
chromium:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		command -v apt-get >/dev/null || { echo "make chromium: the console's browser test needs Debian's chromium and chromium-driver; apt-get is missing: install them by hand" >&2; exit 1; }; \
		[ "$$(id -u)" = 0 ] || { echo "make chromium: installing chromium needs root: run \`sudo apt-get install -y chromium chromium-driver\`" >&2; exit 1; }; \
		echo "installing Debian's chromium and chromium-driver for the console's browser test (once)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends chromium chromium-driver \
			|| { apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; } \
			|| { echo "make chromium: apt-get could not install chromium: check that Debian's registry is reachable" >&2; exit 1; }; \
	fi

# The console's screenshots in docs/console/ (docs/privacy.md shows them), taken by its browser test.
console-screenshots: install chromium functions
	WARDFN_TEST_FUNCTIONS_PREBUILT=1 WARDFN_CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console $(BIN)/python -m pytest tests/e2e/test_console_browser.py

# Installed only when missing. A policy-rc.d answering 101 keeps the package from starting a system
# broker (the tests run their own node on loopback); one already there is left as it was.
rabbitmq:
	@if [ ! -x $(RABBITMQ_BIN)/rabbitmq-server ]; then \
		command -v apt-get >/dev/null || { echo "error: the audit relay's tests need RabbitMQ; apt-get is missing: install rabbitmq-server (3.10 or later) and set RABBITMQ_BIN to the directory holding rabbitmq-server and rabbitmqctl" >&2; exit 1; }; \
		echo "installing Debian's rabbitmq-server for the tests (once; pulls Erlang)"; \
		guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
			|| { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server; }; \
		status=$$?; [ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; \
		[ $$status -eq 0 ] || { echo "error: could not install rabbitmq-server with apt-get (run as root, with Debian's package archive reachable)" >&2; exit 1; }; \
		test -x $(RABBITMQ_BIN)/rabbitmq-server || { echo "error: rabbitmq-server installed but $(RABBITMQ_BIN)/rabbitmq-server is missing: set RABBITMQ_BIN" >&2; exit 1; }; \
	fi

tools: $(TOOLS_BIN)/kustomize $(TOOLS)/.gator-$(GATEKEEPER_VERSION) $(TOOLS_BIN)/promtool $(TOOLS_BIN)/oras

# oras reads and copies the layouts `wardfn package` writes, as a registry push would.
$(TOOLS_BIN)/oras:
	@command -v go >/dev/null || { echo "make tools: oras needs Go to install (https://go.dev/dl/)" >&2; exit 1; }
	GOBIN=$(abspath $(TOOLS_BIN)) go install oras.land/oras/cmd/oras@$(ORAS_VERSION)

$(TOOLS_BIN)/kustomize:
	@command -v go >/dev/null || { echo "make tools: kustomize needs Go to install (https://go.dev/dl/)" >&2; exit 1; }
	GOBIN=$(abspath $(TOOLS_BIN)) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

# Gatekeeper's gator, from the Gatekeeper module: v3.23 evaluates the CEL (K8sNativeValidation) code
# the current gatekeeper-library templates carry (3.15 could not). The stamp names the version, so
# a version change rebuilds it.
$(TOOLS_BIN)/gator: $(TOOLS)/.gator-$(GATEKEEPER_VERSION)

$(TOOLS)/.gator-$(GATEKEEPER_VERSION):
	@command -v go >/dev/null || { echo "make tools: gator needs Go to build (https://go.dev/dl/)" >&2; exit 1; }
	@mkdir -p $(TOOLS_BIN)
	rm -f $(TOOLS_BIN)/gator $(TOOLS)/.gator-*
	GOBIN=$(abspath $(TOOLS_BIN)) go install github.com/open-policy-agent/gatekeeper/v3/cmd/gator@$(GATEKEEPER_VERSION)
	@touch $@

# promtool from Debian's prometheus package, unpacked into the project (no system install).
$(TOOLS_BIN)/promtool:
	@command -v apt-get >/dev/null || { echo "make tools: promtool comes from Debian's prometheus package; apt-get is missing" >&2; exit 1; }
	@mkdir -p $(TOOLS)/deb $(TOOLS_BIN)
	cd $(TOOLS)/deb && rm -f prometheus_*.deb && { apt-get download prometheus || { apt-get update && apt-get download prometheus; }; } \
		&& dpkg-deb -x prometheus_*.deb root
	cp $(TOOLS)/deb/root/usr/bin/promtool $(TOOLS_BIN)/promtool

lint: install
	$(BIN)/ruff check host tests functions bench runtimeclass/images
	$(BIN)/mypy

# The reference pages generated from the code (tests/test_docs.py fails when they drift).
docs: install
	$(BIN)/wardfn docs settings --output docs/settings.md

clean:
	rm -rf $(VENV) .wardfn .pytest_cache

# Microbenchmarks (pytest-benchmark): the parts of one invocation, on their own. Not part of `make test`.
bench: install
	$(BIN)/python -m pytest bench -q -p no:cacheprovider --benchmark-columns=min,median,mean,max,rounds --benchmark-sort=name

# The images, built here without a registry or a daemon (runtimeclass/images/build.py,
# docs/deployment.md#images): the host image to exactly the digest in runtimeclass/images.lock (it
# fails, naming the digests and any Debian package that moved, if not), the opa image likewise,
# and the function-packages image (the host image plus the signed packages of functions/, signed
# with PACKAGES_KEY, default this home's development key). Layouts in .wardfn/images/.
# `make images-lock` rebuilds and rewrites the lock instead of checking it.
IMAGES := .wardfn/images
OPA_STATIC := $(IMAGES)/opa-static/opa
PACKAGES_KEY ?=

$(OPA_STATIC):
	@command -v go >/dev/null || { echo "make images: OPA's static binary needs Go (https://go.dev/dl/)" >&2; exit 1; }
	CGO_ENABLED=0 GOBIN=$(abspath $(dir $@)) go install -trimpath -ldflags=-buildid= github.com/open-policy-agent/opa@$(OPA_VERSION)

mmdebstrap:
	@command -v mmdebstrap >/dev/null || { \
		command -v apt-get >/dev/null || { echo "make images: needs Debian's mmdebstrap (apt-get is missing)" >&2; exit 1; }; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap \
			|| { echo "make images: could not install mmdebstrap with apt-get (run as root)" >&2; exit 1; }; }

images: install mmdebstrap $(OPA_STATIC)
	rm -rf $(IMAGES)/packages
	for f in functions/*/function.toml; do n=$$(basename $$(dirname $$f)); \
		$(BIN)/wardfn package $$n --out $(IMAGES)/packages/$$n $(if $(PACKAGES_KEY),--key $(PACKAGES_KEY)) >/dev/null || exit 1; done
	$(BIN)/python runtimeclass/images/build.py --out $(IMAGES) --opa $(OPA_STATIC) --packages $(IMAGES)/packages --check

images-lock: install mmdebstrap $(OPA_STATIC)
	$(BIN)/python runtimeclass/images/build.py --out $(IMAGES) --opa $(OPA_STATIC)
