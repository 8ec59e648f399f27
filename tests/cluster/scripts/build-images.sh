#!/usr/bin/env bash
# Builds the images the local cluster itself needs, as docker-archive tarballs (no registry, no
# container engine; see image-archive.py):
#   $CHAMPION_CACHE/images/pause.tar    registry.k8s.io/pause:3.10   (sandbox image containerd pins)
#   $CHAMPION_CACHE/images/coredns.tar  champion/coredns:v1.15.0     (from $CHAMPION_CACHE/bin/coredns)
#   build/images/probe.tar              champion/probe:dev           (tests' in-pod helper)
# Cached images are rebuilt only when missing; the probe image every run.
set -euo pipefail
CACHE=${CHAMPION_CACHE:-$HOME/.cache/champion}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
HERE="$ROOT/tests/cluster/scripts"
PROFILE=${PROBE_PROFILE:-dev}
mkdir -p "$CACHE/images"

if [ ! -f "$CACHE/images/pause.tar" ]; then
  dir="$CACHE/src/pause"
  rm -rf "$dir"; mkdir -p "$dir"
  cat > "$dir/main.go" <<'GO'
// pause holds a pod's namespaces: it sleeps until SIGINT or SIGTERM.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	<-c
}
GO
  (cd "$dir" && go mod init champion.dev/pause >/dev/null 2>&1 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o pause .)
  python3 "$HERE/image-archive.py" --tag registry.k8s.io/pause:3.10 --out "$CACHE/images/pause.tar" \
    --file "$dir/pause:/pause" --entrypoint /pause --user 65535
fi

if [ ! -f "$CACHE/images/coredns.tar" ]; then
  [ -x "$CACHE/bin/coredns" ] || { echo "missing $CACHE/bin/coredns: run build-components.sh" >&2; exit 1; }
  python3 "$HERE/image-archive.py" --tag champion/coredns:v1.15.0 --out "$CACHE/images/coredns.tar" \
    --file "$CACHE/bin/coredns:/coredns" --entrypoint /coredns --user 65532
fi

cargo build -q --profile "$PROFILE" -p champion-tests --bin champion-probe
dir=$( [ "$PROFILE" = dev ] && echo debug || echo "$PROFILE" )
# Debug info is most of a dev binary; the image does not need it.
stripped=$(mktemp -d)
trap 'rm -rf "$stripped"' EXIT
strip -o "$stripped/champion-probe" "$ROOT/target/$dir/champion-probe"
python3 "$HERE/image-archive.py" --tag champion/probe:dev --out "$ROOT/build/images/probe.tar" \
  --file "$stripped/champion-probe:/champion-probe" --entrypoint /champion-probe --user 65532
