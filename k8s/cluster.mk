# The cluster path, included from the Makefile: a kind cluster with Knative (Serving + Kourier, Eventing, the
# Kafka source and sink) and Strimzi, the shop deployed by skaffold, the autoscale demo and the load generator.
# Needs docker, kind, kubectl, skaffold (and curl) on PATH. Every kubectl/skaffold call names the kind context,
# so other clusters in your kubeconfig are never touched.

CLUSTER ?= shop
CONTEXT := kind-$(CLUSTER)
KIND ?= kind
KUBECTL ?= kubectl
SKAFFOLD ?= skaffold
KIND_NODE_IMAGE ?=
PROFILE ?= dev
K := $(KUBECTL) --context $(CONTEXT)

# Pinned releases: bump together and re-run `make cluster-down cluster-up`.
KNATIVE_VERSION ?= 1.21.0
STRIMZI_VERSION ?= 0.48.0
KNATIVE_SERVING := https://github.com/knative/serving/releases/download/knative-v$(KNATIVE_VERSION)
KNATIVE_KOURIER := https://github.com/knative/net-kourier/releases/download/knative-v$(KNATIVE_VERSION)
KNATIVE_EVENTING := https://github.com/knative/eventing/releases/download/knative-v$(KNATIVE_VERSION)
KNATIVE_KAFKA := https://github.com/knative-extensions/eventing-kafka-broker/releases/download/knative-v$(KNATIVE_VERSION)
STRIMZI_INSTALL := https://github.com/strimzi/strimzi-kafka-operator/releases/download/$(STRIMZI_VERSION)/strimzi-cluster-operator-$(STRIMZI_VERSION).yaml

INGRESS_PORT ?= 31080# kind maps Kourier's NodePort here (kind-config.yaml)
FORWARD_PORT ?= 31081# `make port-forward` and skaffold forward Kourier here (any cluster)
DEV_ENV := k8s/overlays/dev/.env
WAIT := --for=condition=Available --timeout=600s

.PHONY: cluster-up dev port-forward cluster-down autoscale-demo k8s-generate k8s-check loadgen

## Create the kind cluster and install Knative, Kourier, the Kafka source/sink and Strimzi (pinned versions).
cluster-up:
	@for tool in docker $(KIND) $(KUBECTL) curl; do command -v $$tool >/dev/null || { echo "cluster-up needs $$tool on PATH"; exit 1; }; done
	@$(KIND) get clusters 2>/dev/null | grep -qx '$(CLUSTER)' \
		|| $(KIND) create cluster --name $(CLUSTER) --config kind-config.yaml $(if $(KIND_NODE_IMAGE),--image $(KIND_NODE_IMAGE))
	# Knative Serving, with Kourier as its ingress on NodePort 31080 and the sslip.io domain
	$(K) apply -f $(KNATIVE_SERVING)/serving-crds.yaml
	$(K) wait --for=condition=Established --timeout=120s crd/services.serving.knative.dev
	$(K) apply -f $(KNATIVE_SERVING)/serving-core.yaml
	$(K) apply -f $(KNATIVE_KOURIER)/kourier.yaml
	$(K) -n knative-serving patch configmap config-network --type merge --patch-file k8s/cluster/knative-config-network.yaml
	$(K) -n knative-serving patch configmap config-domain --type merge --patch-file k8s/cluster/knative-config-domain.yaml
	$(K) -n knative-serving patch configmap config-features --type merge --patch-file k8s/cluster/knative-config-features.yaml
	$(K) -n kourier-system patch service kourier --type strategic --patch-file k8s/cluster/kourier-nodeport.yaml
	# Knative Eventing, the KafkaSource (controller + source data plane) and KafkaSink (dead letters)
	$(K) apply -f $(KNATIVE_EVENTING)/eventing-crds.yaml
	$(K) wait --for=condition=Established --timeout=120s crd/pingsources.sources.knative.dev
	$(K) apply -f $(KNATIVE_EVENTING)/eventing-core.yaml
	$(K) apply -f $(KNATIVE_KAFKA)/eventing-kafka-controller.yaml
	$(K) apply -f $(KNATIVE_KAFKA)/eventing-kafka-source.yaml
	$(K) apply -f $(KNATIVE_KAFKA)/eventing-kafka-sink.yaml
	# Strimzi in namespace kafka (its release files say `myproject`), watching it; with room to breathe
	$(K) create namespace kafka --dry-run=client -o yaml | $(K) apply -f -
	curl -sSfL $(STRIMZI_INSTALL) | sed -E 's/^( *)namespace: myproject$$/\1namespace: kafka/' | $(K) -n kafka apply --server-side --force-conflicts -f -
	$(K) -n kafka patch deployment strimzi-cluster-operator --type strategic --patch-file k8s/cluster/strimzi-operator-resources.yaml
	$(K) -n knative-serving wait deployment --all $(WAIT)
	$(K) -n kourier-system wait deployment --all $(WAIT)
	$(K) -n knative-eventing wait deployment --all $(WAIT)
	$(K) -n kafka wait deployment --all $(WAIT)
	@echo "cluster $(CONTEXT) is ready: make dev   (ingress: http://127.0.0.1:$(INGRESS_PORT))"

$(DEV_ENV):
	cp k8s/overlays/dev/.env.example $@
	@echo "made $@ from .env.example (gitignored): the dev Secret's values"

## Build, deploy and watch the shop on the kind cluster (PROFILE=observability adds Prometheus, Grafana, Jaeger).
dev: $(DEV_ENV)
	$(SKAFFOLD) dev -p $(PROFILE) --kube-context $(CONTEXT) --port-forward=user --cleanup=false

## Forward Kourier (the ingress) to 127.0.0.1:$(FORWARD_PORT), for clusters without kind's port mapping.
port-forward:
	$(K) -n kourier-system port-forward --address 127.0.0.1 service/kourier $(FORWARD_PORT):80

## Delete the kind cluster and everything in it.
cluster-down:
	$(KIND) delete cluster --name $(CLUSTER)

## Load one function through the ingress and watch it scale out, then back to zero (bounded; 127.0.0.1 only).
autoscale-demo: install
	PYTHONPATH=. $(PY) -m k8s.tools.autoscale_demo --ingress http://127.0.0.1:$(INGRESS_PORT) --context $(CONTEXT)

## Regenerate k8s/base/generated/ from functions/table.py (k8s-check: fail when it is out of date).
k8s-generate: install
	PYTHONPATH=. $(PY) -m k8s.generate

k8s-check: install
	PYTHONPATH=. $(PY) -m k8s.generate --check

LOADGEN_TARGET ?= local# local: `make run`'s ports; cluster: the ingress, with a Host header per function
LOADGEN_USERS ?= 20
LOADGEN_TIME ?= 60s

## The shop scenario under Locust, headless and bounded: make loadgen LOADGEN_TARGET=cluster LOADGEN_TIME=2m
loadgen: install
	SHOP_TARGET=$(LOADGEN_TARGET) SHOP_INGRESS=http://127.0.0.1:$(INGRESS_PORT) PYTHONPATH=. \
		$(VENV)/bin/locust -f bench/loadgen/locustfile.py --headless -u $(LOADGEN_USERS) -r 5 -t $(LOADGEN_TIME) \
		--stop-timeout 10 --only-summary
