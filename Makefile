# The shop's commands. `make run` and `make test` are the two a new machine needs; both install first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install test-deps orders redrive run test test-unit test-integration test-contract test-e2e test-function lint format bench chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

## Start the whole shop locally (PostgreSQL, migrations, stock, every function); Ctrl-C stops it.
run: install
	PYTHONPATH=. $(PY) -m functions.devserver run

## What the tests run for real besides PostgreSQL: Debian's memcached, and Apache Kafka's jars via Maven.
test-deps: install
	@command -v memcached >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's memcached …"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached >/dev/null); \
	  elif [ -n "$$CI" ] && [ "$$CI" != false ] && [ "$$CI" != 0 ]; then \
	    echo "CI is set and memcached is not installed: install it (apt-get install memcached) or run as root" >&2; exit 1; \
	  else echo "memcached is not installed (apt-get install memcached); its tests will be skipped (under CI=true: a failure)"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium (for the order page's browser tests) …"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	  elif [ -n "$$CI" ] && [ "$$CI" != false ] && [ "$$CI" != 0 ]; then \
	    echo "CI is set and chromium is not installed: install it (apt-get install chromium) or run as root" >&2; exit 1; \
	  else echo "chromium is not installed (apt-get install chromium); the page tests will be skipped (under CI=true: a failure)"; fi; }
	@command -v java >/dev/null 2>&1 || { \
	  if [ -n "$$CI" ] && [ "$$CI" != false ] && [ "$$CI" != 0 ]; then \
	    echo "CI is set and java is not installed: the Kafka broker needs a Java 17+ runtime" >&2; exit 1; \
	  else echo "java is not installed (Java 17+ runs the Kafka broker); the Kafka tests will be skipped (under CI=true: a failure)"; fi; }
	@echo "Resolving Apache Kafka's jars with Maven (cached after the first time) …"
	PYTHONPATH=. $(PY) -m shared_lib.devtools.kafka_server resolve

## Publish test orders to make run's Kafka, then report what was ingested and dead-lettered:
## make orders N=10000 BAD=5%
N ?= 10000
BAD ?= 5%
orders: install
	PYTHONPATH=. $(PY) -m functions.devtools.orders_generator --count $(N) --bad $(BAD) --bootstrap 127.0.0.1:19092 \
	  --database-url postgresql://postgres@127.0.0.1:$${SHOP_PG_PORT:-15432}/orders

## Republish a dead-letter topic's letters to their source topic (progress kept in group redrive.<TOPIC>):
## make redrive TOPIC=loms.order-events.dlq [DRY_RUN=1] [CLUSTER=1]
## CLUSTER=1 runs it inside the cluster, in the loms-outbox-relay Deployment's container (same image).
TOPIC ?= loms.order-events.dlq
REDRIVE_ARGS = --topic $(TOPIC) $(if $(filter-out 0 false,$(DRY_RUN)),--dry-run,)
redrive: install
	@if [ -n "$(CLUSTER)" ]; then \
	  kubectl -n shop exec deploy/loms-outbox-relay -- python -m shared_lib.redrive \
	    --bootstrap shop-kafka-bootstrap.kafka.svc.cluster.local:9092 $(REDRIVE_ARGS); \
	else PYTHONPATH=. $(PY) -m shared_lib.redrive --bootstrap $${SHOP_KAFKA_BOOTSTRAP:-127.0.0.1:19092} $(REDRIVE_ARGS); fi

## Install, start the test infrastructure, run every suite, stop what was started.
test: test-deps
	PYTHONPATH=. $(PY) -m pytest tests -q -p no:cacheprovider

test-unit: install
	PYTHONPATH=. $(PY) -m pytest tests/unit -q

test-integration: install
	PYTHONPATH=. $(PY) -m pytest tests/integration -q

test-contract: install
	PYTHONPATH=. $(PY) -m pytest tests/contract -q

test-e2e: install
	PYTHONPATH=. $(PY) -m pytest tests/e2e -q

## One function's tests alone: make test-function F=list_cart
test-function: install
	@test -n "$(F)" || { echo "usage: make test-function F=<function name>"; exit 2; }
	PYTHONPATH=. $(PY) -m pytest tests -q --function $(F)

lint: install
	$(VENV)/bin/ruff check functions shared_lib tests bench k8s
	$(VENV)/bin/ruff format --check functions shared_lib tests bench k8s
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix functions shared_lib tests bench k8s
	$(VENV)/bin/ruff format functions shared_lib tests bench k8s

## Benchmarks: print measured figures; never part of `make test`.
bench: install
	PYTHONPATH=. $(PY) -m bench.run_all

## The event path under faults (notifier DB down, broker SIGKILL, relay SIGKILL, a near-limit record) against a
## make run-style shop on shifted loopback ports: events expected, lost, duplicated, out of order, recovery time.
chaos: test-deps
	PYTHONPATH=. $(PY) -m bench.faults

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache

# The cluster path: kind, Knative, Strimzi, skaffold (cluster-up, dev, port-forward, cluster-down, autoscale-demo,
# k8s-generate, loadgen), OpenFaaS (openfaas-up, openfaas-deploy, openfaas-down), test-cluster and the upstream
# validators (validate-manifests, versions).
include k8s/cluster.mk
