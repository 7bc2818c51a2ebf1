# Every target creates .venv and installs what it needs by itself: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The original doc's variables (../shared/seed/k6-experiments-doc.md, section 6).
PRODUCT_ID ?= 123
BASE_URL ?= http://localhost:3000
TOKEN ?= $(EXPERIMENTS_API_KEY)

.DEFAULT_GOAL := help
.PHONY: help install demo test unit integration e2e lint migrate

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml layers/common/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r layers/common/requirements.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the runtime and dev dependencies

test: $(STAMP) ## Run lint and every test (DATABASE_URL or an embedded PostgreSQL)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

unit: $(STAMP) ## Tests without I/O
	$(VENV)/bin/pytest tests/unit

integration: $(STAMP) ## Tests against a real PostgreSQL
	$(VENV)/bin/pytest tests/integration

e2e: $(STAMP) ## Real HTTP, real k6
	$(VENV)/bin/pytest tests/e2e

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .

migrate: $(STAMP) ## Apply db/migrations to DATABASE_URL
	$(PY) scripts/migrate.py

demo: $(STAMP) ## The main job: migrate an embedded PostgreSQL, post a sample report, print the rows
	$(PY) scripts/demo.py
