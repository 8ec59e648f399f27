#!/usr/bin/env bash
# Builds the real Kubernetes node components from the package registries into a cache outside
# the repository, keyed by version: a second run finds every binary and takes seconds.
#
#   CHAMPION_CACHE (default ~/.cache/champion)  where the binaries go: $CHAMPION_CACHE/bin/<name>
#
# A cold build takes about 10 minutes on 2 cores (Kubernetes beside everything else, in two streams).
set -euo pipefail

CACHE=${CHAMPION_CACHE:-$HOME/.cache/champion}
K8S_VERSION=v1.36.3
K8S_STAGING_VERSION=v0.36.3
ETCD_VERSION=v3.6.16
CONTAINERD_VERSION=v2.4.2
CNI_VERSION=v1.10.0
CRICTL_VERSION=v1.37.0
HELM_VERSION=v3.22.0
COREDNS_VERSION=v1.15.0
CRANE_VERSION=v0.22.1
# Prometheus 3.x is tagged v0.3XX.Y in Go module terms (v0.316.0 is 3.16.0).
PROMETHEUS_MODULE_VERSION=v0.316.0
PROMETHEUS_VERSION=3.16.0

BIN="$CACHE/bin"
STAMPS="$CACHE/stamps"
export GOPATH="${GOPATH:-$HOME/go}"
export GOCACHE="${GOCACHE:-$CACHE/go-build}"
export GOFLAGS="-mod=mod"
mkdir -p "$BIN" "$STAMPS" "$CACHE/src"

log() { printf '[build-components] %s\n' "$*" >&2; }

# built NAME VERSION OUTPUT... -> true when NAME@VERSION was built and its outputs are still there.
built() {
  local name=$1 version=$2; shift 2
  [ -f "$STAMPS/$name-$version" ] || return 1
  local f; for f in "$@"; do [ -e "$f" ] || return 1; done
}
stamp() { touch "$STAMPS/$1-$2"; }
timed() { # timed NAME VERSION FUNCTION OUTPUT...
  local name=$1 version=$2 fn=$3; shift 3
  if built "$name" "$version" "$@"; then log "$name $version: cached"; return; fi
  log "$name $version: building..."
  local t0=$SECONDS
  "$fn"
  stamp "$name" "$version"
  log "$name $version: built in $((SECONDS - t0)) s"
}

need_debian() {
  local missing=()
  command -v runc >/dev/null || missing+=(runc)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v mount >/dev/null || missing+=(mount)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# A scratch module that requires MODULE@VERSION so `go build` can build its main packages.
scratch_module() { # scratch_module DIR MODULE VERSION
  local dir=$1 mod=$2 ver=$3
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && go mod init champion.dev/build >/dev/null 2>&1 && go mod edit -require="$mod@$ver")
}

build_kubernetes() {
  local dir="$CACHE/src/kubernetes-$K8S_VERSION"
  scratch_module "$dir" k8s.io/kubernetes "$K8S_VERSION"
  local modfile
  modfile=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # k8s.io/kubernetes replaces its staging modules with local paths; point each at its release.
  local staging
  staging=$(grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$modfile" | awk '{print $1}' | sort -u)
  (cd "$dir"
   for m in $staging; do go mod edit -replace="$m=$m@$K8S_STAGING_VERSION"; done
   cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
   go mod tidy -e >/dev/null 2>&1 || true
   local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitTreeState=clean"
   CGO_ENABLED=0 go build -tags tools -trimpath -ldflags "$ld" -o "$BIN/" \
     k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
     k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
     k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
}

build_etcd() {
  local dir="$CACHE/src/etcd-$ETCD_VERSION"
  scratch_module "$dir" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
}

build_cni() {
  local dir="$CACHE/src/cni-$CNI_VERSION"
  scratch_module "$dir" github.com/containernetworking/plugins "$CNI_VERSION"
  mkdir -p "$CACHE/cni/bin"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$CACHE/cni/bin/" \
     github.com/containernetworking/plugins/plugins/main/bridge \
     github.com/containernetworking/plugins/plugins/main/loopback \
     github.com/containernetworking/plugins/plugins/ipam/host-local \
     github.com/containernetworking/plugins/plugins/meta/portmap)
}

# helm, crictl, containerd, CoreDNS and the Prometheus of the cluster tests in ONE module, so
# the Kubernetes client libraries, gRPC, protobuf and OpenTelemetry they share (at the same
# versions after Go's minimal version selection) compile once, not five times. CoreDNS has only
# the plugins the cluster's Corefile uses (tests/src/cluster/config.rs), in CoreDNS's own plugin
# order. Prometheus keeps only Kubernetes service discovery (Debian's build has none, which is
# what scrapes pods by their prometheus.io/* annotations) and no web UI assets.
TOOLS="helm-$HELM_VERSION.crictl-$CRICTL_VERSION.containerd-$CONTAINERD_VERSION.coredns-$COREDNS_VERSION.prometheus-$PROMETHEUS_VERSION"
build_tools() {
  local dir="$CACHE/src/tools"
  rm -rf "$dir"; mkdir -p "$dir/coredns"
  (cd "$dir" && go mod init champion.dev/tools >/dev/null 2>&1 && go mod edit \
     -require="helm.sh/helm/v3@$HELM_VERSION" \
     -require="sigs.k8s.io/cri-tools@$CRICTL_VERSION" \
     -require="github.com/containerd/containerd/v2@$CONTAINERD_VERSION" \
     -require="github.com/coredns/coredns@$COREDNS_VERSION" \
     -require="github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION")
  cat >"$dir/coredns/main.go" <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"ready", "health", "errors", "cache", "kubernetes", "loop"}
}

func main() { coremain.Run() }
GO
  local containerd="-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  (cd "$dir"
   export CGO_ENABLED=0
   go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$BIN/helm" helm.sh/helm/v3/cmd/helm
   go build -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" -o "$BIN/crictl" sigs.k8s.io/cri-tools/cmd/crictl
   go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" ./coredns
   go build -trimpath -tags "urfave_cli_no_docs no_btrfs" -ldflags "-s -w $containerd" -o "$BIN/" \
     github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr
   go build -trimpath -tags "urfave_cli_no_docs no_grpc" -ldflags "-s -w $containerd" -o "$BIN/" \
     github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
   go build -trimpath -tags remove_all_sd,enable_kubernetes_sd \
     -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
     -o "$BIN/prometheus" github.com/prometheus/prometheus/cmd/prometheus)
}

build_crane() {
  local dir="$CACHE/src/crane-$CRANE_VERSION"
  scratch_module "$dir" github.com/google/go-containerregistry "$CRANE_VERSION"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/crane" github.com/google/go-containerregistry/cmd/crane)
}

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PAUSE_IMAGE_VERSION=3.10

# The pod sandbox image: a static binary that sleeps until signalled, under the name the
# containerd config pins.
build_pause_image() {
  local dir="$CACHE/src/pause"
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$SCRIPTS/../pause" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/pause" .)
  mkdir -p "$CACHE/images"
  "$SCRIPTS/image.sh" --tag "registry.k8s.io/pause:$PAUSE_IMAGE_VERSION" --user 65535:65535 \
    --out "$CACHE/images/pause.tar" "$dir/pause"
}

# CoreDNS as the cluster DNS, run as a Deployment: entrypoint /usr/local/bin/coredns.
build_coredns_image() {
  mkdir -p "$CACHE/images"
  "$SCRIPTS/image.sh" --tag "champion/coredns:$COREDNS_VERSION" --out "$CACHE/images/coredns.tar" "$BIN/coredns"
}

# Two streams at once (the builds are CPU-bound, so this mostly overlaps downloads and links):
# Kubernetes, the longest; everything else beside it.
stream_kubernetes() {
  timed kubernetes "$K8S_VERSION" build_kubernetes "$BIN/kube-apiserver" "$BIN/kube-controller-manager" "$BIN/kube-scheduler" "$BIN/kubectl" "$BIN/kubelet" "$BIN/kube-proxy"
}
stream_rest() {
  timed tools "$TOOLS" build_tools "$BIN/helm" "$BIN/crictl" "$BIN/coredns" "$BIN/containerd" "$BIN/ctr" "$BIN/containerd-shim-runc-v2" "$BIN/prometheus"
  timed etcd "$ETCD_VERSION" build_etcd "$BIN/etcd"
  timed cni-plugins "$CNI_VERSION" build_cni "$CACHE/cni/bin/bridge" "$CACHE/cni/bin/host-local" "$CACHE/cni/bin/loopback" "$CACHE/cni/bin/portmap"
  timed crane "$CRANE_VERSION" build_crane "$BIN/crane"
  timed pause-image "$PAUSE_IMAGE_VERSION" build_pause_image "$CACHE/images/pause.tar"
  timed coredns-image "$TOOLS" build_coredns_image "$CACHE/images/coredns.tar"
}

main() {
  local t0=$SECONDS
  if ! built kubernetes "$K8S_VERSION" "$BIN/kubelet"; then
    log "a cold build of every component takes about 10 minutes on 2 cores; later runs take seconds"
  fi
  need_debian
  stream_kubernetes &
  local kubernetes=$!
  stream_rest &
  local rest=$!
  local status=0
  wait "$kubernetes" || status=$?
  wait "$rest" || status=$?
  [ "$status" -eq 0 ] || { log "a component failed to build (see above)"; exit "$status"; }
  log "all components ready in $BIN ($((SECONDS - t0)) s)"
}

main "$@"
