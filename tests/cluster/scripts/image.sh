#!/usr/bin/env bash
# Assembles a minimal container image archive with crane (go-containerregistry): one layer with the
# given binaries, the shared libraries they link (from ldd), CA certificates and a non-root user
# 65532 — no shell, no package manager. The archive is a docker-archive tarball that
# `ctr images import`, `kind load image-archive` and `docker load` all accept.
#
#   image.sh --tag champion/predictor:dev --out build/images/predictor.tar \
#            --entrypoint /usr/local/bin/predictor BINARY [BINARY...]
#
# Binaries are installed under /usr/local/bin; the first one is the default entrypoint.
set -euo pipefail

CACHE=${CHAMPION_CACHE:-$HOME/.cache/champion}
CRANE=${CRANE:-$CACHE/bin/crane}
tag="" out="" entrypoint="" user="65532:65532" args=() bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --entrypoint) entrypoint=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    --arg) args+=("$2"); shift 2 ;;
    -*) echo "image.sh: unknown flag $1" >&2; exit 2 ;;
    *) bins+=("$1"); shift ;;
  esac
done
[ -n "$tag" ] && [ -n "$out" ] && [ ${#bins[@]} -gt 0 ] || {
  echo "usage: image.sh --tag NAME:TAG --out FILE.tar [--entrypoint PATH] [--user UID:GID] [--arg ARG]... BINARY..." >&2; exit 2; }
[ -x "$CRANE" ] || { echo "image.sh: crane not found at $CRANE (run tests/cluster/scripts/build-components.sh)" >&2; exit 1; }
[ -n "$entrypoint" ] || entrypoint="/usr/local/bin/$(basename "${bins[0]}")"

work=$(mktemp -d)
registry_pid=""
cleanup() { [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

root="$work/root"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
for b in "${bins[@]}"; do
  [ -f "$b" ] || { echo "image.sh: binary $b does not exist" >&2; exit 1; }
  install -m 0755 "$b" "$root/usr/local/bin/"
  # Debug builds (what `make test` runs) carry line tables the image does not need.
  if command -v strip >/dev/null; then strip --strip-debug "$root/usr/local/bin/$(basename "$b")"; fi
  # Every shared library the binary links, at the path the loader expects (the loader included).
  while read -r lib; do
    [ -n "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done < <(ldd "$b" 2>/dev/null | grep -oE '(/[^ ]+)' | sort -u || true)
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"

layer="$work/layer.tar"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$layer" .

# crane mutate works on registry references, so the image is assembled in a throwaway local
# registry on a free loopback port, then written out as an archive under its final tag.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$CRANE" registry serve --address "127.0.0.1:$port" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.05
done
ref="127.0.0.1:$port/$(echo "$tag" | sed 's#^docker.io/##')"
crane() { "$CRANE" "$@" >/dev/null 2>>"$work/crane.log" || { cat "$work/crane.log" >&2; exit 1; }; }
crane append --insecure -f "$layer" -t "$ref"
mutate=(crane mutate --insecure "$ref" --set-platform linux/amd64 --user "$user"
        --entrypoint "$entrypoint" --workdir / --env "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
        --env "PATH=/usr/local/bin" -l "org.opencontainers.image.source=champion")
[ ${#args[@]} -gt 0 ] && mutate+=(--cmd "$(IFS=,; echo "${args[*]}")")
mkdir -p "$(dirname "$out")"
# -o writes the mutated image as an archive tagged with -t instead of pushing it.
"${mutate[@]}" -t "$tag" -o "$out.partial"
mv "$out.partial" "$out"
echo "image.sh: $tag -> $out ($(du -h "$out" | cut -f1))" >&2
