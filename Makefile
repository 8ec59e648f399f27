# champion — every set-up step lives here; a fresh machine needs only Rust, Go and make.
#   make demo    the whole system on a local one-node Kubernetes
#   make test    everything CI checks
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

export CHAMPION_CACHE ?= $(HOME)/.cache/champion
# Compiled Rust lives beside the Go components, outside the clone, so a fresh clone builds warm.
export CARGO_TARGET_DIR ?= $(CHAMPION_CACHE)/target
export CARGO_TERM_COLOR ?= never

BIN := $(CARGO_TARGET_DIR)/release
IMAGES := build/images
CLUSTER := cargo run -q -p champion-tests --bin champion-cluster --
IMAGE := tests/cluster/scripts/image.sh
CRD := crds/modelpipelines.champion.dev.yaml

.PHONY: help components images crds cluster cluster-down test lint unit-test cluster-test demo \
        bench-trainer bench-predictor bench-operator python-deps

help:
	@echo "make demo         run the whole system on a local one-node Kubernetes"
	@echo "make test         fmt, clippy, unit tests, images, cluster, integration tests"
	@echo "make components   build etcd, Kubernetes, containerd, CNI, CoreDNS, helm, crane (cached)"
	@echo "make images       build champion/{operator,trainer-job,predictor,probe}:dev archives"
	@echo "make cluster      start (or reuse) the local cluster; make cluster-down removes it"
	@echo "make crds         regenerate $(CRD) from the Rust types"
	@echo "make bench-trainer | bench-predictor | bench-operator"

# The real Kubernetes parts, built from the package registries into $(CHAMPION_CACHE), keyed by
# version: about 10-15 minutes cold on 2 cores, seconds afterwards.
components:
	@bash tests/cluster/scripts/build-components.sh

# Python tools the tests drive (locust load tests, moto's S3 server).
python-deps:
	@python3 -c 'import locust, moto' 2>/dev/null || python3 -m pip install -q locust 'moto[server]'

images: components
	cargo build --release -p operator -p trainer-job -p predictor -p champion-tests --bins
	@mkdir -p $(IMAGES)
	@$(IMAGE) --tag champion/operator:dev    --out $(IMAGES)/operator.tar    $(BIN)/operator
	@$(IMAGE) --tag champion/trainer-job:dev --out $(IMAGES)/trainer-job.tar $(BIN)/trainer-job
	@$(IMAGE) --tag champion/predictor:dev   --out $(IMAGES)/predictor.tar   $(BIN)/predictor
	@$(IMAGE) --tag champion/probe:dev       --out $(IMAGES)/probe.tar       $(BIN)/champion-probe

crds:
	cargo run -q -p champion-api --bin crdgen > $(CRD).partial
	mv $(CRD).partial $(CRD)

cluster: components images
	$(CLUSTER) up

cluster-down:
	$(CLUSTER) down

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit-test:
	cargo test --workspace --exclude champion-tests

# Integration tests on the real local cluster; the cluster is always taken down afterwards, also
# when a test fails, so the host is left as it was found.
cluster-test: components images python-deps
	@status=0; \
	$(CLUSTER) up || status=$$?; \
	if [ $$status -eq 0 ]; then cargo test -p champion-tests -- --test-threads=2 || status=$$?; fi; \
	$(CLUSTER) down || status=$$?; \
	exit $$status

test: lint unit-test cluster-test
	@echo "make test: all checks passed"

demo: components images
	$(CLUSTER) up
	bash tests/demo/demo.sh

bench-trainer:
	@echo "bench-trainer: not wired yet" && exit 1

bench-predictor:
	@echo "bench-predictor: not wired yet" && exit 1

bench-operator:
	@echo "bench-operator: not wired yet" && exit 1
