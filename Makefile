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

# The cargo profile of the image binaries: `release` (thin LTO) for users and benchmarks;
# `make test` (cluster-test) builds them with `test-images` (no LTO), minutes less on 2 cores.
IMAGE_PROFILE ?= release
BIN = $(CARGO_TARGET_DIR)/$(IMAGE_PROFILE)
IMAGES := build/images
CLUSTER := cargo run -q -p champion-tests --bin champion-cluster --
IMAGE := tests/cluster/scripts/image.sh
CRD := crds/modelpipelines.champion.dev.yaml

.PHONY: help components images crds cluster cluster-down cluster-selftest test lint unit-test cluster-test demo \
        bench-trainer bench-predictor bench-operator test-deps prometheus test-faults soak

help:
	@echo "make demo         run the whole system on a local one-node Kubernetes"
	@echo "make test         fmt, clippy, unit tests, images, cluster, integration tests"
	@echo "make components   build etcd, Kubernetes, containerd, CNI, CoreDNS, helm, crane (cached)"
	@echo "make images       build champion/{operator,trainer-job,predictor,probe}:dev archives"
	@echo "make cluster      start (or reuse) the local cluster; make cluster-down removes it"
	@echo "make crds         regenerate $(CRD) from the Rust types"
	@echo "make test-faults  only the fault-injection suite on the local cluster (also part of make test)"
	@echo "make soak         10 minutes of load and new data every minute on the local cluster"
	@echo "make bench-trainer | bench-predictor | bench-operator"

# The real Kubernetes parts, built from the package registries into $(CHAMPION_CACHE), keyed by
# version: about 10-15 minutes cold on 2 cores, seconds afterwards.
components:
	@bash tests/cluster/scripts/build-components.sh

# Tools the tests drive: wrk and locust load the predictor, moto serves S3 locally, tritonclient
# speaks the Open Inference Protocol (binary tensors) to it, promtool (Debian's prometheus
# package) checks the metrics and the chart's alerting rules.
test-deps:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	@command -v promtool >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null)
	@python3 -c 'import locust, moto' 2>/dev/null || python3 -m pip install -q locust 'moto[server]'
	@python3 -c 'import tritonclient.http' 2>/dev/null || python3 -m pip install -q 'tritonclient[http]'

# The Prometheus server the cluster test runs, with Kubernetes service discovery (Debian's
# build has none), from the Go module proxy into $(CHAMPION_CACHE)/bin: ~7 min cold, cached after.
prometheus:
	@bash tests/cluster/scripts/build-prometheus.sh

images: components
	cargo build --profile $(IMAGE_PROFILE) -p operator -p trainer-job -p predictor -p champion-probe
	@mkdir -p $(IMAGES)
	@$(IMAGE) --tag champion/operator:dev    --out $(IMAGES)/operator.tar    $(BIN)/operator
	@$(IMAGE) --tag champion/trainer-job:dev --out $(IMAGES)/trainer-job.tar $(BIN)/trainer-job
	@$(IMAGE) --tag champion/predictor:dev   --out $(IMAGES)/predictor.tar   $(BIN)/predictor
	@$(IMAGE) --tag champion/probe:dev       --out $(IMAGES)/probe.tar       $(BIN)/champion-probe

crds:
	cargo run -q -p champion-api --bin crdgen > $(CRD).partial
	mv $(CRD).partial $(CRD)
	cp $(CRD) charts/champion-operator/crds/modelpipelines.champion.dev.yaml

cluster: components images
	$(CLUSTER) up

cluster-down:
	$(CLUSTER) down

lint: components
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(CHAMPION_CACHE)/bin/helm lint --quiet charts/champion-operator

unit-test: test-deps
	CHAMPION_REQUIRE_LOCUST=1 CHAMPION_REQUIRE_WRK=1 CHAMPION_REQUIRE_TRITONCLIENT=1 CHAMPION_REQUIRE_PROMTOOL=1 cargo test --workspace --exclude champion-tests

# Integration tests on the real local cluster, in two lanes at once (tests/cluster-suites.sh); the
# cluster is always taken down afterwards, also when a test fails, so the host is left as it was
# found.
cluster-test: IMAGE_PROFILE = test-images
cluster-test: components images test-deps prometheus
	@status=0; \
	$(CLUSTER) up || status=$$?; \
	if [ $$status -eq 0 ]; then CHAMPION_REQUIRE_PROMTOOL=1 tests/cluster-suites.sh || status=$$?; fi; \
	$(CLUSTER) down || status=$$?; \
	exit $$status

# The fault-injection suite alone (tests/tests/faults_e2e.rs: trainer killed or past its
# deadline, corrupt and crash-looping models under load, the API server restarted mid-run,
# failures in `kubectl describe`). `make test` runs it too, inside cluster-test.
test-faults: IMAGE_PROFILE = test-images
test-faults: components images
	@status=0; \
	$(CLUSTER) up || status=$$?; \
	if [ $$status -eq 0 ]; then cargo test -p champion-tests --test faults_e2e -- --test-threads=2 || status=$$?; fi; \
	$(CLUSTER) down || status=$$?; \
	exit $$status

# 10 minutes of steady load on the predictor Service with new data every minute: zero failed
# requests, every round judged once, operator and predictor memory flat within 10 %. Too long
# for `make test` (the test is #[ignore]d there); CHAMPION_SOAK_SECONDS changes the length.
soak: IMAGE_PROFILE = test-images
soak: components images
	@status=0; \
	$(CLUSTER) up || status=$$?; \
	if [ $$status -eq 0 ]; then cargo test -p champion-tests --test soak_e2e -- --ignored --nocapture || status=$$?; fi; \
	$(CLUSTER) down || status=$$?; \
	exit $$status

# Proves that up + down leave the host as it was found; runs alone, after the shared cluster is gone.
cluster-selftest:
	$(CLUSTER) selftest-cleanup

test: lint unit-test cluster-test cluster-selftest
	@echo "make test: all checks passed"

# The whole story from nothing (tests/demo/demo.sh): build, cluster, helm install, data slots one
# at a time, predictions, a load test, then everything stopped. KEEP=1 leaves it running.
demo:
	@printf '\n==> build: Kubernetes components (cached) and the champion images\n'
	@$(MAKE) --no-print-directory components images
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	CHAMPION_CLUSTER="$(CLUSTER)" IMAGE_PROFILE=$(IMAGE_PROFILE) bash tests/demo/demo.sh

bench-trainer:
	cargo bench -p trainer-job --bench train_wine

bench-predictor: test-deps
	bash predictor/bench/run.sh

# The operator on the local cluster: data -> serving latency, then 300 pipelines (memory, idle
# CPU), then 300 pipelines failing on a missing Secret (API request rate). Uses a running
# cluster as it is; one the benchmark had to start is taken down after it.
# Runs the release binary `images` built (a `cargo run -p champion-tests` alone would resolve
# features differently and rebuild the crate).
bench-operator: images
	@started=0; \
	state="$$($(CLUSTER) status 2>/dev/null || true)"; \
	case "$$state" in *"cluster: healthy"*) ;; *) started=1 ;; esac; \
	$(CLUSTER) up; \
	status=0; \
	cargo build -q --profile $(IMAGE_PROFILE) -p champion-tests --bin bench-operator && \
	CARGO_MANIFEST_DIR=$(CURDIR)/tests $(BIN)/bench-operator || status=$$?; \
	if [ $$started = 1 ]; then $(CLUSTER) down || status=$$?; fi; \
	exit $$status
