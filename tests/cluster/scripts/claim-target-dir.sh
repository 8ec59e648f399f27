#!/usr/bin/env bash
# The Makefile shares one cargo target dir between clones ($CARGO_TARGET_DIR in the champion
# cache), so a fresh clone builds warm. But cargo judges a workspace crate fresh by mtimes: a
# clone whose files are older than another clone's build would run that clone's binaries, with
# that clone's code and paths compiled in. So when the target dir was last claimed by another
# clone (or by nobody), this clone's files are touched first: cargo then rebuilds the workspace's
# own crates and reuses every dependency. Run by the Makefile once per `make`.
set -euo pipefail
dir=${CARGO_TARGET_DIR:?CARGO_TARGET_DIR is not set}
here=$(pwd -P)
mark="$dir/.champion-clone"
last=$(cat "$mark" 2>/dev/null || true)
[ "$last" = "$here" ] && exit 0
mkdir -p "$dir"
find . \( -name .git -o -name build -o -name target \) -prune -o -type f -exec touch -c {} +
printf '%s\n' "$here" >"$mark.partial"
mv "$mark.partial" "$mark"
echo "[make] $dir was last built from ${last:-an unknown clone}: this clone's crates are rebuilt once" >&2
