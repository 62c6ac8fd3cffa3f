# TicketBuster: `make dev` runs the system on http://127.0.0.1:8000, `make test` runs every test.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
# uv trusts the system certificate store too (see .ci/bootstrap.sh).
export UV_NATIVE_TLS ?= 1
export UV_SYSTEM_CERTS ?= 1
UV := uv
PYTEST_ARGS ?=

.PHONY: bootstrap dev up down status migrate seed lint fmt test test-unit bench loadtest k8s-check clean

bootstrap:
	@.ci/bootstrap.sh

## Run the whole system locally; Ctrl-C stops everything it started.
dev: bootstrap
	$(UV) run python -m core.devservices run

up: bootstrap
	$(UV) run python -m core.devservices up

down:
	$(UV) run python -m core.devservices down

status:
	$(UV) run python -m core.devservices status

lint: bootstrap
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

fmt:
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

## Every test: lint, types, unit, integration, e2e (browser included) against real servers.
test: bootstrap
	@.ci/setup-tools.sh
	$(MAKE) lint
	$(UV) run python -m core.devservices up
	$(UV) run pytest $(PYTEST_ARGS)

test-unit: bootstrap
	$(UV) run pytest tests/unit $(PYTEST_ARGS)

bench: bootstrap
	$(UV) run python -m core.devservices up
	$(UV) run python -m loadtest.bench

loadtest: bootstrap
	$(UV) run python -m loadtest.run

k8s-check: bootstrap
	bash .ci/k8s-check.sh

clean: down
	rm -rf .tb .pytest_cache .mypy_cache .ruff_cache test-artifacts
