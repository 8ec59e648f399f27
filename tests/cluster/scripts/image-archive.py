#!/usr/bin/env python3
"""Writes a docker-archive image tarball (what `docker save`, `ctr images import`,
`kind load image-archive` and `docker load` read) from files on this host, with no container
engine, no registry and no base image: one layer holding the given files, the shared libraries
`ldd` lists for them, /etc/passwd and /etc/group with the non-root user, and CA certificates.

  image-archive.py --tag champion/probe:dev --out build/images/probe.tar \
      --file target/debug/champion-probe:/champion-probe --entrypoint /champion-probe [--user 65532]

Deterministic: same inputs, same bytes (mtime 0, sorted entries)."""
import argparse, hashlib, io, json, os, subprocess, sys, tarfile


def ldd_libs(path):
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return []
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            i = parts.index("=>")
            if i + 1 < len(parts) and parts[i + 1].startswith("/"):
                libs.append(parts[i + 1])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])  # the dynamic loader
    return libs


def add_dir(tar, seen, path):
    path = path.strip("/")
    if not path or path in seen:
        return
    add_dir(tar, seen, os.path.dirname(path))
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    tar.addfile(info)
    seen.add(path)


def add_bytes(tar, seen, dest, data, mode):
    dest = dest.strip("/")
    if dest in seen:
        return
    add_dir(tar, seen, os.path.dirname(dest))
    info = tarfile.TarInfo(dest)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))
    seen.add(dest)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--file", action="append", default=[], help="SRC:DEST (ELF files bring their libraries)")
    ap.add_argument("--entrypoint", required=True)
    ap.add_argument("--arg", action="append", default=[], help="default argument (Cmd)")
    ap.add_argument("--user", default="65532")
    ap.add_argument("--env", action="append", default=[])
    a = ap.parse_args()

    entries = {}
    for spec in a.file:
        src, dest = spec.split(":", 1)
        entries[dest] = (src, 0o755 if os.access(src, os.X_OK) else 0o644)
        for lib in ldd_libs(src):
            entries.setdefault(lib, (os.path.realpath(lib), 0o755))
    uid = a.user.split(":")[0]
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        seen = set()
        for dest in sorted(entries):
            src, mode = entries[dest]
            with open(src, "rb") as f:
                add_bytes(tar, seen, dest, f.read(), mode)
        add_bytes(tar, seen, "/etc/passwd", f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{uid}:{uid}:nonroot:/home/nonroot:/sbin/nologin\n".encode(), 0o644)
        add_bytes(tar, seen, "/etc/group", f"root:x:0:\nnonroot:x:{uid}:\n".encode(), 0o644)
        for ca in ["/etc/ssl/certs/ca-certificates.crt"]:
            if os.path.isfile(ca):
                with open(ca, "rb") as f:
                    add_bytes(tar, seen, ca, f.read(), 0o644)
        info = tarfile.TarInfo("tmp")
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777, 0
        tar.addfile(info)
    layer = layer_buf.getvalue()
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": [a.entrypoint],
            "Cmd": a.arg or None,
            "User": a.user if ":" in a.user else f"{a.user}:{a.user}",
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"] + a.env,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created_by": "tests/cluster/scripts/image-archive.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    tag = a.tag if "/" in a.tag.split(":")[0] and "." in a.tag.split("/")[0] else "docker.io/" + a.tag
    manifest = [{"Config": f"{config_digest}.json", "RepoTags": [tag], "Layers": [f"{layer_digest}/layer.tar"]}]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.GNU_FORMAT) as out:
        seen = set()
        add_bytes(out, seen, f"{config_digest}.json", config_bytes, 0o644)
        add_bytes(out, seen, f"{layer_digest}/layer.tar", layer, 0o644)
        add_bytes(out, seen, "manifest.json", json.dumps(manifest).encode(), 0o644)
    os.replace(tmp, a.out)
    print(f"{a.out}: {tag} ({len(layer) // 1024} KiB layer)")


if __name__ == "__main__":
    sys.exit(main())
