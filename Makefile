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
# Cargo trusts mtimes, so a clone must not reuse another clone's build of the workspace crates.
ifeq ($(MAKELEVEL),0)
$(shell CARGO_TARGET_DIR="$(CARGO_TARGET_DIR)" bash tests/cluster/scripts/claim-target-dir.sh >&2)
endif

# The cargo profile of the image binaries of `make images`: `release` (thin LTO), for users, the
# demo and the benchmarks.
IMAGE_PROFILE ?= release
BIN = $(CARGO_TARGET_DIR)/$(IMAGE_PROFILE)
IMAGES := build/images
CLUSTER := cargo run -q -p champion-tests --bin champion-cluster --
# `make test` builds the workspace once (`tests/run-tests.sh build`, one `cargo test --no-run`):
# every test binary, and the debug binaries its images carry and its cluster manager runs.
TEST_BIN = $(CARGO_TARGET_DIR)/debug
TEST_CLUSTER = $(TEST_BIN)/champion-cluster
IMAGE := tests/cluster/scripts/image.sh
CRD := crds/modelpipelines.champion.dev.yaml

.PHONY: help components images test-images crds cluster cluster-down cluster-selftest test lint unit-test cluster-test demo \
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
# version: about 10 minutes cold on 2 cores, seconds afterwards.
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
# build has none): built with the components (tests/cluster/scripts/build-components.sh).
prometheus: components

# pack_images DIR: the four image archives from the binaries in DIR.
define pack_images
	@mkdir -p $(IMAGES)
	@$(IMAGE) --tag champion/operator:dev    --out $(IMAGES)/operator.tar    $(1)/operator
	@$(IMAGE) --tag champion/trainer-job:dev --out $(IMAGES)/trainer-job.tar $(1)/trainer-job
	@$(IMAGE) --tag champion/predictor:dev   --out $(IMAGES)/predictor.tar   $(1)/predictor
	@$(IMAGE) --tag champion/probe:dev       --out $(IMAGES)/probe.tar       $(1)/champion-probe
endef

images: components
	cargo build --profile $(IMAGE_PROFILE) -p operator -p trainer-job -p predictor -p champion-probe
	$(call pack_images,$(BIN))

# The images `make test` runs: the debug binaries of its one workspace build (the model and the
# trainer's numeric crates optimised, see Cargo.toml's [profile.dev]), so nothing is built twice.
test-images: components
	tests/run-tests.sh build
	$(call pack_images,$(TEST_BIN))

crds:
	cargo run -q -p champion-api --bin crdgen > $(CRD).partial
	mv $(CRD).partial $(CRD)
	cp $(CRD) charts/champion-operator/crds/modelpipelines.champion.dev.yaml

cluster: components images
	$(CLUSTER) up

cluster-down:
	$(CLUSTER) down

# clippy (-D warnings) runs inside the one workspace build (tests/run-tests.sh build).
lint: components
	cargo fmt --all -- --check
	tests/run-tests.sh build
	$(CHAMPION_CACHE)/bin/helm lint --quiet charts/champion-operator

# Every test binary but the cluster suites', a few at a time (tests/run-tests.sh).
unit-test: test-deps
	CHAMPION_REQUIRE_LOCUST=1 CHAMPION_REQUIRE_WRK=1 CHAMPION_REQUIRE_TRITONCLIENT=1 CHAMPION_REQUIRE_PROMTOOL=1 tests/run-tests.sh unit

# Integration tests on the real local cluster, each test its own job, several at once
# (tests/run-tests.sh); the cluster is always taken down afterwards, also when a test fails, so
# the host is left as it was found. SUITES=faults_e2e (target names) runs only those.
cluster-test: components test-images test-deps
	@status=0; \
	$(TEST_CLUSTER) up || status=$$?; \
	if [ $$status -eq 0 ]; then CHAMPION_REQUIRE_PROMTOOL=1 tests/run-tests.sh cluster $(SUITES) || status=$$?; fi; \
	$(TEST_CLUSTER) down || status=$$?; \
	exit $$status

# The fault-injection suite alone (tests/tests/faults_e2e.rs: trainer killed or past its
# deadline, corrupt and crash-looping models under load, the API server restarted mid-run,
# failures in `kubectl describe`). `make test` runs it too, inside cluster-test.
test-faults:
	@$(MAKE) --no-print-directory cluster-test SUITES=faults_e2e

# 10 minutes of steady load on the predictor Service with new data every minute: zero failed
# requests, every round judged once, operator and predictor memory flat within 10 %. Too long
# for `make test` (the test is #[ignore]d there); CHAMPION_SOAK_SECONDS changes the length.
soak: components test-images
	@status=0; \
	$(TEST_CLUSTER) up || status=$$?; \
	if [ $$status -eq 0 ]; then tests/run-tests.sh exec soak_e2e --ignored --nocapture || status=$$?; fi; \
	$(TEST_CLUSTER) down || status=$$?; \
	exit $$status

# Proves that up + down leave the host as it was found; runs alone, after the shared cluster is gone.
cluster-selftest:
	tests/run-tests.sh build
	$(TEST_CLUSTER) selftest-cleanup

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
