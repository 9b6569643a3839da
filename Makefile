# Willowe Tasks. `make help` lists every target.
# Every target installs what it needs first, so none has to be run by hand.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_HOME := .cache/kafka
LOCALKAFKA := $(BIN)/python -m broker.localkafka --home $(KAFKA_HOME)
# Where the local Kafka listens; the app's own default (KAFKA_BROKER) is localhost:9092.
KAFKA_BROKER ?= 127.0.0.1:9092
export KAFKA_BROKER
PYTEST_ARGS ?=
# The local PostgreSQL for development; tests start their own on a free port.
POSTGRES_HOME ?= .cache/postgres
POSTGRES_PORT ?= 5433
LOCALPOSTGRES := $(BIN)/python -m willowe_tasks.testing.localpostgres --home $(POSTGRES_HOME) --port $(POSTGRES_PORT)

.DEFAULT_GOAL := help
.PHONY: help install kafka kafka-stop kafka-status kafka-kill kafka-cli postgres postgres-stop postgres-status topics db test lint demo bench drills clean

help: ## list every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(VENV)/.installed ## create .venv and install the project with its test tools

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; Python 3.11+ is needed" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python 3.11+ is needed, $(PYTHON) is $$($(PYTHON) --version)" >&2; exit 1; }
	@echo "Installing into $(VENV) (first run: about 60 MB, under a minute) …"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

$(KAFKA_HOME)/libs/.fetched: broker/localkafka/pom.xml | $(VENV)/.installed
	@command -v java >/dev/null || { echo "error: Java 17+ is needed to run Kafka" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "error: Maven is needed to fetch the Kafka jars" >&2; exit 1; }
	rm -rf $(KAFKA_HOME)/libs
	$(LOCALKAFKA) fetch
	@touch $@

kafka: $(KAFKA_HOME)/libs/.fetched ## start the local Kafka on 127.0.0.1:9092 (no-op if it answers)
	$(LOCALKAFKA) start

kafka-stop: | $(VENV)/.installed ## stop the local Kafka cleanly (data is kept)
	$(LOCALKAFKA) stop

kafka-status: | $(VENV)/.installed ## say whether the local Kafka answers
	$(LOCALKAFKA) status

kafka-kill: | $(VENV)/.installed ## SIGKILL the local Kafka, as a crash would
	$(LOCALKAFKA) kill

kafka-cli: $(KAFKA_HOME)/libs/.fetched ## run a Kafka CLI tool: make kafka-cli CMD="kafka-topics --describe --topic high-priority-notifications"
	@test -n "$(CMD)" || { echo 'usage: make kafka-cli CMD="kafka-topics --list"' >&2; exit 2; }
	$(LOCALKAFKA) tool $(CMD)

postgres: | $(VENV)/.installed ## start the local PostgreSQL on 127.0.0.1:5433 (no-op if it answers)
	$(LOCALPOSTGRES) start

postgres-stop: | $(VENV)/.installed ## stop the local PostgreSQL cleanly (data is kept)
	$(LOCALPOSTGRES) stop

postgres-status: | $(VENV)/.installed ## say whether the local PostgreSQL answers
	$(LOCALPOSTGRES) status

topics: kafka ## create or repair the notification topics and their .DQ/.XQ (idempotent)
	$(BIN)/python -m willowe_tasks topics

db: | $(VENV)/.installed ## apply the PostgreSQL schema of DATABASE_URL (idempotent; nothing to do without it)
	$(BIN)/python -m willowe_tasks db migrate

test: $(KAFKA_HOME)/libs/.fetched ## run the test suite (starts a local Kafka if none answers)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: | $(VENV)/.installed ## ruff and mypy
	$(BIN)/ruff check broker willowe_tasks tests
	$(BIN)/mypy broker willowe_tasks

demo: topics db ## the main job: workers deliver the guide's examples to local fake APNs/FCM
	$(BIN)/python examples/demo.py

BENCH_ARGS ?=

bench: kafka ## benchmarks against the peers, about 15 min (BENCH_ARGS="--quick" or "--only drain")
	$(BIN)/python -m bench $(BENCH_ARGS)

drills: $(KAFKA_HOME)/libs/.fetched ## fault drills on a private Kafka (and PostgreSQL), about 8 min: workers, hosts, Kafka and push providers failing mid-work
	$(BIN)/python -m bench.drills

clean: ## remove the virtualenv, caches and the local Kafka's jars and data
	-$(LOCALKAFKA) stop 2>/dev/null
	-$(LOCALPOSTGRES) stop 2>/dev/null
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .mypy_cache *.egg-info
