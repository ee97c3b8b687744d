#!/usr/bin/env bash
# Build cnnlab's images with podman or docker, from the project root:
#   docker/build.sh cpu            # cnnlab:cpu (docker/Dockerfile)
#   docker/build.sh cuda           # cnnlab:cuda (docker/Dockerfile.cuda): torch's CUDA build from PyPI
#   docker/build.sh stack          # the team stack's database and object store, built locally:
#                                  # cnnlab-postgres:15 and cnnlab-s3 (docker/postgres, docker/s3)
#   docker/build.sh all
# Settings (environment):
#   ENGINE       podman or docker (default: podman where installed)
#   BASE         the base image (default python:3.11-slim; docker/base/make-base.sh makes one offline)
#   HOST_PIP=1   pip inside the build uses this machine's pip settings: its local wheel folders and file://
#                indexes are mounted read-only for the build and its extra indexes passed on (nothing stays in
#                the image). For machines whose torch CPU wheel or mirrors are local (podman only: docker
#                build cannot mount host folders).
#   TORCH_INDEX  where pip finds torch==2.13.0+cpu (default https://download.pytorch.org/whl/cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${ENGINE:-$(command -v podman || command -v docker || true)}
BASE=${BASE:-python:3.11-slim}
[ -n "$ENGINE" ] || { echo "error: neither podman nor docker is installed" >&2; exit 2; }
[ $# -gt 0 ] || { sed -n '2,16p' "$0"; exit 2; }

build_args=(--build-arg "BASE=$BASE")
if [ "${HOST_PIP:-0}" = 1 ]; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  # pip's own reading of its settings (files and PIP_* variables) -> a pip.conf for the build + the folders it names
  python3 - "$scratch" <<'PY'
import os, shlex, subprocess, sys
from pathlib import Path
out = Path(sys.argv[1])
values = {}
for line in subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout.splitlines():
    key, _, value = line.partition("=")
    values[key.split(".", 1)[-1]] = value.strip().strip("'\"")
find_links = values.get("find-links", "").split()
indexes = values.get("extra-index-url", "").split()
# a file:// index's pages link to files beside it (../files/...): its parent folder goes in whole
local = [Path(u[len("file://"):].rstrip("/")) for u in indexes if u.startswith("file:///")]
folders = [p for p in find_links if p.startswith("/")] + [str(p.parent if p.name == "simple" else p) for p in local]
folders = [f for f in folders if Path(f).is_dir()]
conf = ["[global]", "cert = /etc/ssl/certs/ca-certificates.crt"]
if find_links:
    conf.append(f"find-links = {' '.join(find_links)}")
if indexes:
    conf.append(f"extra-index-url = {' '.join(indexes)}")
(out / "pip.conf").write_text("\n".join(conf) + "\n")
(out / "indexes").write_text(" ".join(indexes))
(out / "volumes").write_text(" ".join(f"-v {shlex.quote(f)}:{shlex.quote(f)}:ro" for f in folders))
PY
  read -r -a volumes < "$scratch/volumes" || true
  build_args+=("${volumes[@]}" -v "$scratch/pip.conf:/etc/pip.conf:ro")
  indexes=$(cat "$scratch/indexes")
  [ -z "$indexes" ] || TORCH_INDEX=${TORCH_INDEX:-$indexes}
fi
[ -z "${TORCH_INDEX:-}" ] || build_args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")

# the base: local, else pulled; else say how to make it without a registry (rather than the engine's DNS error)
if ! "$ENGINE" image inspect "$BASE" >/dev/null 2>&1 && ! "$ENGINE" pull -q "$BASE" >/dev/null 2>&1; then
  echo "error: the base image $BASE is not here and cannot be pulled; make it from Debian packages with" \
    "docker/base/make-base.sh (then BASE=localhost/python:3.11-slim with docker)" >&2
  exit 2
fi

build() {  # build <tag> <Dockerfile> [context]
  echo "building $1 ($2, base $BASE, $ENGINE)"
  "$ENGINE" build "${build_args[@]}" -f "$2" -t "$1" "${3:-.}"
}
for target in "$@"; do
  case $target in
    cpu) build cnnlab:cpu docker/Dockerfile ;;
    cuda) build cnnlab:cuda docker/Dockerfile.cuda ;;
    stack) build cnnlab-postgres:15 docker/postgres/Dockerfile docker/postgres
           build cnnlab-s3 docker/s3/Dockerfile docker/s3 ;;
    all) "$0" cpu cuda stack ;;
    *) echo "error: unknown image '$target'; expected cpu, cuda, stack or all" >&2; exit 2 ;;
  esac
done
