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

# Pinned releases: bump together and re-run `make cluster-down cluster-up`. Knative's release is ONE setting:
# the knative.dev/serving version in k8s/validate/go.mod (the validators of `make test` run that release's own
# code; Knative's Go modules v0.N.P are release 1.(N-27).P: v0.48.0 = 1.21.0). Bump it there (with eventing,
# `cd k8s/validate && go get knative.dev/serving@v0.N.P knative.dev/eventing@v0.N.P && go mod tidy`).
VALIDATE_DIR := k8s/validate
KNATIVE_MODULE := $(shell awk '$$1 == "knative.dev/serving" { print $$2 }' $(VALIDATE_DIR)/go.mod)
KNATIVE_VERSION := $(shell echo '$(KNATIVE_MODULE)' | awk -F. '{ printf "1.%d.%d", $$2 - 27, $$3 }')
KIND_VERSION := $(shell awk '$$1 == "sigs.k8s.io/kind" { print $$2 }' $(VALIDATE_DIR)/go.mod)
SKAFFOLD_VERSION := $(shell awk '$$1 == "github.com/GoogleContainerTools/skaffold/v2" { print $$2 }' $(VALIDATE_DIR)/go.mod)
STRIMZI_VERSION ?= 0.48.0
KNATIVE_SERVING := https://github.com/knative/serving/releases/download/knative-v$(KNATIVE_VERSION)
KNATIVE_KOURIER := https://github.com/knative/net-kourier/releases/download/knative-v$(KNATIVE_VERSION)
KNATIVE_EVENTING := https://github.com/knative/eventing/releases/download/knative-v$(KNATIVE_VERSION)
KNATIVE_KAFKA := https://github.com/knative-extensions/eventing-kafka-broker/releases/download/knative-v$(KNATIVE_VERSION)
STRIMZI_INSTALL := https://github.com/strimzi/strimzi-kafka-operator/releases/download/$(STRIMZI_VERSION)/strimzi-cluster-operator-$(STRIMZI_VERSION).yaml

INGRESS_PORT ?= 31080# kind maps Kourier's NodePort here (kind-config.yaml)
FORWARD_PORT ?= 31081# `make port-forward` and skaffold forward Kourier here (any cluster)
WAIT := --for=condition=Available --timeout=600s

.PHONY: cluster-up dev port-forward cluster-down autoscale-demo k8s-generate k8s-check loadgen versions \
	test-cluster validate-manifests openfaas-up openfaas-deploy openfaas-port-forward openfaas-down

# Strimzi's operator in namespace kafka (its release files say `myproject`), watching it; with room to breathe.
# $(1): the kubectl command naming the cluster's context.
define install-strimzi
	$(1) create namespace kafka --dry-run=client -o yaml | $(1) apply -f -
	curl -sSfL $(STRIMZI_INSTALL) | sed -E 's/^( *)namespace: myproject$$/\1namespace: kafka/' | $(1) -n kafka apply --server-side --force-conflicts -f -
	$(1) -n kafka patch deployment strimzi-cluster-operator --type strategic --patch-file k8s/cluster/strimzi-operator-resources.yaml
endef

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
	$(K) -n knative-serving patch configmap config-autoscaler --type merge --patch-file k8s/cluster/knative-config-autoscaler.yaml
	$(K) -n kourier-system patch service kourier --type strategic --patch-file k8s/cluster/kourier-nodeport.yaml
	# Knative Eventing, the KafkaSource (controller + source data plane) and KafkaSink (dead letters)
	$(K) apply -f $(KNATIVE_EVENTING)/eventing-crds.yaml
	$(K) wait --for=condition=Established --timeout=120s crd/pingsources.sources.knative.dev
	$(K) apply -f $(KNATIVE_EVENTING)/eventing-core.yaml
	$(K) apply -f $(KNATIVE_KAFKA)/eventing-kafka-controller.yaml
	$(K) apply -f $(KNATIVE_KAFKA)/eventing-kafka-source.yaml
	$(K) apply -f $(KNATIVE_KAFKA)/eventing-kafka-sink.yaml
	# Strimzi in namespace kafka, watching it
	$(call install-strimzi,$(K))
	$(K) -n knative-serving wait deployment --all $(WAIT)
	$(K) -n kourier-system wait deployment --all $(WAIT)
	$(K) -n knative-eventing wait deployment --all $(WAIT)
	$(K) -n kafka wait deployment --all $(WAIT)
	@echo "cluster $(CONTEXT) is ready: make dev   (ingress: http://127.0.0.1:$(INGRESS_PORT))"

## Build, deploy and watch the shop on the kind cluster (PROFILE=observability adds Prometheus, Grafana, Jaeger).
## `skaffold dev` alone does the same: the dev Secret comes from the committed k8s/overlays/dev/dev-secrets.env.
dev:
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

## Print the pinned releases (Knative, kind and skaffold come from k8s/validate/go.mod).
versions:
	@echo "knative $(KNATIVE_VERSION) (Go module $(KNATIVE_MODULE))"
	@echo "kind $(KIND_VERSION)"
	@echo "skaffold $(SKAFFOLD_VERSION)"
	@echo "strimzi $(STRIMZI_VERSION)"
	@echo "openfaas chart $(OPENFAAS_CHART_VERSION), cron-connector chart $(CRON_CONNECTOR_CHART_VERSION)"

## Check every overlay, kind's and skaffold's configs and stack.yml with the upstream projects' Go code
## (k8s/validate; built once into ~/.cache/knative-shop/validate, needs Go). `make test` runs it too.
validate-manifests: install
	PYTHONPATH=. $(PY) -m k8s.tools.upstream

## The cluster suite alone (offline: renders and validates, builds nothing in Docker, dials nothing).
test-cluster: install
	PYTHONPATH=. $(PY) -m pytest tests/cluster -q -p no:cacheprovider

# --- OpenFaaS CE on its own kind cluster --------------------------------------------------------------------
# The same image and functions as on Knative (k8s/openfaas/stack.yml, generated), OpenFaaS CE from its
# published chart, the cron-connector for cron functions, the shop's own event source for CloudEvent ones,
# Strimzi, PostgreSQL and Memcached as on Knative. Every kubectl and helm call names the cluster's context;
# faas-cli talks to the gateway through a port-forward that names it too. Needs docker, kind, kubectl, helm,
# faas-cli and curl on PATH.

OPENFAAS_CLUSTER ?= shop-openfaas
OPENFAAS_CONTEXT := kind-$(OPENFAAS_CLUSTER)
OPENFAAS_CHART_VERSION ?= 14.2.34
CRON_CONNECTOR_CHART_VERSION ?= 0.6.10
OPENFAAS_CHARTS := https://openfaas.github.io/faas-netes/
OPENFAAS_PORT ?= 31112# the public gateway (public functions only), published by k8s/openfaas/kind-config.yaml
OPENFAAS_ADMIN_PORT ?= 31113# the OpenFaaS gateway itself, forwarded only while openfaas-deploy runs
OPENFAAS_IMAGE := dev.local/shop-functions:openfaas
HELM ?= helm
FAAS_CLI ?= faas-cli
DOCKER ?= docker
KO := $(KUBECTL) --context $(OPENFAAS_CONTEXT)
HO := $(HELM) --kube-context $(OPENFAAS_CONTEXT)

## A kind cluster with OpenFaaS CE (chart pinned), the cron-connector and Strimzi; PostgreSQL and Memcached
## come with openfaas-deploy.
openfaas-up:
	@for tool in $(DOCKER) $(KIND) $(KUBECTL) $(HELM) curl; do command -v $$tool >/dev/null || { echo "openfaas-up needs $$tool on PATH"; exit 1; }; done
	@$(KIND) get clusters 2>/dev/null | grep -qx '$(OPENFAAS_CLUSTER)' \
		|| $(KIND) create cluster --name $(OPENFAAS_CLUSTER) --config k8s/openfaas/kind-config.yaml $(if $(KIND_NODE_IMAGE),--image $(KIND_NODE_IMAGE))
	$(KO) apply -f k8s/openfaas/namespaces.yaml
	# the gateway stays inside the cluster (exposeServices=false): the public gateway is the only way in
	$(HO) upgrade --install openfaas openfaas --repo $(OPENFAAS_CHARTS) --version $(OPENFAAS_CHART_VERSION) \
		--namespace openfaas --set functionNamespace=openfaas-fn --set generateBasicAuth=true \
		--set exposeServices=false --set functions.imagePullPolicy=IfNotPresent --wait --timeout 10m
	$(HO) upgrade --install cron-connector cron-connector --repo $(OPENFAAS_CHARTS) \
		--version $(CRON_CONNECTOR_CHART_VERSION) --namespace openfaas --wait --timeout 5m
	$(call install-strimzi,$(KO))
	$(KO) -n openfaas wait deployment --all $(WAIT)
	$(KO) -n kafka wait deployment --all $(WAIT)
	@echo "cluster $(OPENFAAS_CONTEXT) is ready: make openfaas-deploy   (public gateway: http://127.0.0.1:$(OPENFAAS_PORT))"

## Build the image, load it into the OpenFaaS cluster, apply the infrastructure and the OpenFaaS path's objects
## (k8s/overlays/openfaas), then deploy every function of k8s/openfaas/stack.yml with faas-cli.
openfaas-deploy:
	@for tool in $(DOCKER) $(KIND) $(KUBECTL) $(FAAS_CLI); do command -v $$tool >/dev/null || { echo "openfaas-deploy needs $$tool on PATH"; exit 1; }; done
	$(DOCKER) build -t $(OPENFAAS_IMAGE) .
	$(KIND) load docker-image $(OPENFAAS_IMAGE) --name $(OPENFAAS_CLUSTER)
	# the functions' Secret in their namespace (OpenFaaS mounts it as files; SECRETS_DIR exports them)
	$(KO) -n openfaas-fn create secret generic shop-secrets --from-env-file=k8s/overlays/dev/dev-secrets.env \
		--dry-run=client -o yaml | $(KO) apply -f -
	$(KO) -n shop delete job shop-migrate --ignore-not-found
	$(KO) apply --server-side --force-conflicts -k k8s/overlays/openfaas
	$(KO) -n shop wait --for=condition=Complete job/shop-migrate --timeout=600s
	@set -e; $(KO) -n openfaas port-forward --address 127.0.0.1 service/gateway $(OPENFAAS_ADMIN_PORT):8080 >/dev/null & \
		forward=$$!; trap 'kill $$forward' EXIT; \
		for i in $$(seq 1 50); do curl -sf http://127.0.0.1:$(OPENFAAS_ADMIN_PORT)/healthz >/dev/null && break; sleep 0.2; done; \
		$(KO) -n openfaas get secret basic-auth -o jsonpath='{.data.basic-auth-password}' | base64 -d \
			| $(FAAS_CLI) login --gateway http://127.0.0.1:$(OPENFAAS_ADMIN_PORT) --password-stdin; \
		$(FAAS_CLI) deploy -f k8s/openfaas/stack.yml --gateway http://127.0.0.1:$(OPENFAAS_ADMIN_PORT)
	@echo "the shop is on OpenFaaS: curl http://127.0.0.1:$(OPENFAAS_PORT)/function/product-list-products -H 'X-API-KEY: testToken'"

## Forward the public gateway to 127.0.0.1:$(OPENFAAS_PORT), for clusters without kind's port mapping.
openfaas-port-forward:
	$(KO) -n openfaas port-forward --address 127.0.0.1 service/public-gateway $(OPENFAAS_PORT):8080

## Delete the OpenFaaS kind cluster.
openfaas-down:
	$(KIND) delete cluster --name $(OPENFAAS_CLUSTER)
