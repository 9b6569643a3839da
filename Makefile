# Willowe Tasks. `make help` lists every target.
# Every target installs what it needs first, so none has to be run by hand.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_HOME := .cache/kafka
# The secured Kafka and the cluster keep their own homes and ports and share the jars.
SECURE_KAFKA := $(BIN)/python -m broker.localkafka --secure --home .cache/kafka-secure --jars $(KAFKA_HOME)/libs
CLUSTER_KAFKA = $(BIN)/python -m broker.localkafka --nodes $(NODES) --home .cache/kafka-cluster --jars $(KAFKA_HOME)/libs
# NODES=3: the kafka* targets run a cluster of that many nodes; NODE=n: just node n of it.
NODES ?= 1
NODE ?=
KAFKA_RUN = $(if $(filter-out 1,$(NODES)),$(CLUSTER_KAFKA),$(LOCALKAFKA))
NODE_ARG = $(if $(NODE),--node $(NODE))
# Where the local Kafka listens; the app's own default (KAFKA_BROKER) is localhost:9092.
KAFKA_BROKER ?= 127.0.0.1:9092
export KAFKA_BROKER
# `make kafka` (and so bench, topics, demo) starts the local Kafka on KAFKA_BROKER's
# port when it names this machine, its controller on the next port, as the tests do;
# otherwise on the defaults (9092, 9093).
comma := ,
KAFKA_FIRST := $(firstword $(subst $(comma), ,$(KAFKA_BROKER)))
KAFKA_PORT := $(lastword $(subst :, ,$(KAFKA_FIRST)))
KAFKA_IS_LOCAL := $(filter 127.0.0.1:$(KAFKA_PORT) localhost:$(KAFKA_PORT),$(KAFKA_FIRST))
KAFKA_PORT_ARGS = $(if $(KAFKA_IS_LOCAL),--port $(KAFKA_PORT) --controller-port $(shell echo $$(($(KAFKA_PORT) + 1))))
LOCALKAFKA = $(BIN)/python -m broker.localkafka --home $(KAFKA_HOME) $(KAFKA_PORT_ARGS)
PYTEST_ARGS ?=
# The local PostgreSQL for development; tests start their own on a free port.
POSTGRES_HOME ?= .cache/postgres
POSTGRES_PORT ?= 5433
LOCALPOSTGRES := $(BIN)/python -m willowe_tasks.testing.localpostgres --home $(POSTGRES_HOME) --port $(POSTGRES_PORT)

.DEFAULT_GOAL := help
.PHONY: help install node-install schema kafka kafka-stop kafka-status kafka-kill kafka-cli kafka-secure kafka-secure-stop kafka-secure-status postgres postgres-stop postgres-status topics db test lint demo bench drills clean

help: ## list every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-19s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(VENV)/.installed ## create .venv and install the project with its test tools

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; Python 3.11+ is needed" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python 3.11+ is needed, $(PYTHON) is $$($(PYTHON) --version)" >&2; exit 1; }
	@echo "Installing into $(VENV) (first run: about 60 MB, under a minute) …"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# The Node.js client (clients/node): its locked dependencies, from the npm registry.
NODE_CLIENT := clients/node

node-install: $(NODE_CLIENT)/node_modules/.installed ## install the Node.js client's dependencies (npm ci)

$(NODE_CLIENT)/node_modules/.installed: $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	@command -v npm >/dev/null || { echo "error: Node.js 20+ with npm is needed for clients/node" >&2; exit 1; }
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

schema: | $(VENV)/.installed ## regenerate clients/node/wire-schema.json from the payload models
	$(BIN)/python -m willowe_tasks schema --out $(NODE_CLIENT)/wire-schema.json

$(KAFKA_HOME)/libs/.fetched: broker/localkafka/pom.xml | $(VENV)/.installed
	@command -v java >/dev/null || { echo "error: Java 17+ is needed to run Kafka" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "error: Maven is needed to fetch the Kafka jars" >&2; exit 1; }
	rm -rf $(KAFKA_HOME)/libs
	$(LOCALKAFKA) fetch
	@touch $@

kafka: $(KAFKA_HOME)/libs/.fetched ## start the local Kafka on KAFKA_BROKER's port, 127.0.0.1:9092 by default (no-op if it answers); NODES=3: a cluster on 9192-9194 (NODE=n: that node)
	$(KAFKA_RUN) start $(NODE_ARG)

kafka-stop: | $(VENV)/.installed ## stop the local Kafka cleanly (data is kept); NODES=3 [NODE=n] for the cluster
	$(KAFKA_RUN) stop $(NODE_ARG)

kafka-status: | $(VENV)/.installed ## say whether the local Kafka answers; NODES=3: each node of the cluster
	$(KAFKA_RUN) status

kafka-kill: | $(VENV)/.installed ## SIGKILL the local Kafka, as a crash would; NODES=3 [NODE=n] for the cluster
	$(KAFKA_RUN) kill $(NODE_ARG)

kafka-cli: $(KAFKA_HOME)/libs/.fetched ## run a Kafka CLI tool: make kafka-cli CMD="kafka-topics --describe --topic high-priority-notifications"
	@test -n "$(CMD)" || { echo 'usage: make kafka-cli CMD="kafka-topics --list"' >&2; exit 2; }
	$(KAFKA_RUN) tool $(CMD)

kafka-secure: $(KAFKA_HOME)/libs/.fetched ## start the secured Kafka (SASL_SSL, SCRAM users, ACLs) on 127.0.0.1:9094; prints the clients' settings
	$(SECURE_KAFKA) start

kafka-secure-stop: | $(VENV)/.installed ## stop the secured Kafka cleanly (data, users and certificates are kept)
	$(SECURE_KAFKA) stop

kafka-secure-status: | $(VENV)/.installed ## say whether the secured Kafka answers (as admin)
	$(SECURE_KAFKA) status

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

test: $(KAFKA_HOME)/libs/.fetched $(NODE_CLIENT)/node_modules/.installed ## run the test suite, the Node.js client's included (starts a local Kafka if none answers)
	$(BIN)/pytest $(PYTEST_ARGS)

# Test folders are checked one at a time: their helpers (support.py,
# broker_support.py, …) are imported the way pytest puts them on sys.path.
TEST_DIRS := tests tests/delivery tests/kafka_broker tests/notifications tests/stores tests/ops tests/metrics \
	tests/security

lint: | $(VENV)/.installed ## ruff and mypy (versions pinned in pyproject) over the code, bench and tests
	$(BIN)/ruff check broker willowe_tasks bench tests examples
	$(BIN)/mypy broker willowe_tasks bench examples
	@for dir in $(TEST_DIRS); do \
		echo "$(BIN)/mypy $$dir/*.py"; MYPYPATH=tests:$$dir $(BIN)/mypy $$dir/*.py || exit 1; \
	done

# -- Security: KAFKA_SECURE=1 runs the demo on the secured local Kafka (SASL_SSL,
# ACLs, encrypted bodies); `make acls` applies the ACL table there, as admin.
.PHONY: acls compose-secrets
KAFKA_SECURE ?=
SECURE_KAFKA_BROKER := 127.0.0.1:9094
AS_SECURE_ADMIN = eval "$$($(SECURE_KAFKA) env admin)" &&

demo: $(if $(KAFKA_SECURE),kafka-secure,topics) db ## the main job: workers deliver the guide's examples to local fake APNs/FCM; KAFKA_SECURE=1: on the secured Kafka, encrypted
	$(if $(KAFKA_SECURE),KAFKA_BROKER=$(SECURE_KAFKA_BROKER) )$(BIN)/python examples/demo.py $(if $(KAFKA_SECURE),--secure .cache/kafka-secure)

acls: kafka-secure ## apply the ACL table (web, worker, operator) to the secured local Kafka, as admin; reports and repairs drift
	$(AS_SECURE_ADMIN) $(BIN)/python -m willowe_tasks topics && $(BIN)/python -m willowe_tasks acls

compose-secrets: | $(VENV)/.installed ## write throwaway secrets for compose.yaml's secured setup into ./secrets
	$(BIN)/python examples/compose_secrets.py secrets
# -- end of security

BENCH_ARGS ?=

bench: kafka ## benchmarks against the peers, about 15 min (BENCH_ARGS="--quick" or "--only drain")
	$(BIN)/python -m bench $(BENCH_ARGS)

drills: $(KAFKA_HOME)/libs/.fetched ## fault drills on a private Kafka (and PostgreSQL), 20–30 min (prints its total): workers, hosts, Kafka and push providers failing mid-work
	$(BIN)/python -m bench.drills

clean: ## remove the virtualenv, caches and the local Kafkas' jars and data
	-$(LOCALKAFKA) stop 2>/dev/null
	-$(LOCALPOSTGRES) stop 2>/dev/null
	-$(SECURE_KAFKA) stop 2>/dev/null
	-$(BIN)/python -m broker.localkafka --nodes 3 --home .cache/kafka-cluster stop 2>/dev/null
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .mypy_cache *.egg-info $(NODE_CLIENT)/node_modules
