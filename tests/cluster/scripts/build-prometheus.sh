#!/usr/bin/env bash
# Builds the Prometheus server the cluster test runs (tests/tests/prometheus_e2e.rs) from the Go
# module proxy into the component cache, keyed by version; a second run takes milliseconds.
#
# Not Debian's `prometheus` package: Debian builds it without Kubernetes service discovery
# ("field kubernetes_sd_configs not found"), which is what scrapes pods by their
# prometheus.io/* annotations. Built with only that discovery (`remove_all_sd`,
# `enable_kubernetes_sd`) and without the web UI's assets (the HTTP API is complete):
# about 7 minutes cold on 2 cores, most of it downloading modules.
#
#   CHAMPION_CACHE (default ~/.cache/champion)  the binary goes to $CHAMPION_CACHE/bin/prometheus
set -euo pipefail

CACHE=${CHAMPION_CACHE:-$HOME/.cache/champion}
# Prometheus 3.x is tagged v0.3XX.Y in Go module terms (v0.316.0 is 3.16.0).
PROMETHEUS_MODULE_VERSION=v0.316.0
PROMETHEUS_VERSION=3.16.0

BIN="$CACHE/bin"
STAMP="$CACHE/stamps/prometheus-$PROMETHEUS_MODULE_VERSION"
export GOPATH="${GOPATH:-$HOME/go}"
export GOCACHE="${GOCACHE:-$CACHE/go-build}"
mkdir -p "$BIN" "$CACHE/stamps"

if [ -f "$STAMP" ] && [ -x "$BIN/prometheus" ]; then
  echo "[build-prometheus] prometheus $PROMETHEUS_VERSION: cached" >&2
  exit 0
fi
echo "[build-prometheus] prometheus $PROMETHEUS_VERSION: building..." >&2
t0=$SECONDS
GOBIN="$BIN" GOFLAGS=-mod=mod CGO_ENABLED=0 go install -trimpath \
  -tags remove_all_sd,enable_kubernetes_sd \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
  "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION"
touch "$STAMP"
echo "[build-prometheus] prometheus $PROMETHEUS_VERSION: built in $((SECONDS - t0)) s" >&2
