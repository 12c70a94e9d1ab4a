# Hawser: two commands on a fresh machine.
#   make run    set up and start the whole gateway on its embedded defaults (SQLite + embedded log)
#   make test   set up, start the real services the tests need (Kafka, PostgreSQL), run the suite
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help venv run test lint typecheck provision bench clean

help:
	@echo "make run    - start Hawser (embedded log, SQLite registry): devices on :8080 (HTTP, TTN), :1883 (MQTT),"
	@echo "              :5683/udp (CoAP), :5684/udp (DTLS); API on :8081; MQTT integration on :1884"
	@echo "make test   - provision Kafka + PostgreSQL, then lint, type-check and run the whole suite"
	@echo "make bench  - run the benchmarks in bench/ (needs Kafka; see docs/performance.md)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { bash scripts/ensure-python.sh $(PYTHON) && $(PYTHON) -m venv $(VENV); }
	@bash scripts/provision.sh build-deps
	@echo "installing Hawser and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@{ $(BIN)/python -m pip install --disable-pip-version-check --upgrade pip \
	   && $(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'; } > $(VENV)/install.log 2>&1 \
	   || { tail -40 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/hawser serve

provision:
	@bash scripts/provision.sh

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: provision $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP) provision
	$(BIN)/python bench/http_publish.py
	$(BIN)/python bench/mqtt_publish.py
	$(BIN)/python bench/coap_publish.py
	$(BIN)/python bench/mqtt_connections.py
	$(BIN)/python bench/e2e_latency.py

clean:
	rm -rf $(VENV) .hawser .mypy_cache .ruff_cache .pytest_cache
