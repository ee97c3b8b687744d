#!/usr/bin/env bash
# A python:3.11-slim equivalent made from Debian packages alone, for machines that reach Debian's
# mirrors but no image registry. It is imported as localhost/python:3.11-slim, which the Dockerfiles'
# default `FROM python:3.11-slim` resolves to (podman looks in local storage first; docker users pass
# --build-arg BASE=localhost/python:3.11-slim). Debian bookworm's python3 is 3.11.
#
#   docker/base/make-base.sh                    # podman (or docker when podman is missing), as root
#   ENGINE=docker docker/base/make-base.sh
#   CA_DIR=/path/to/extra/cas docker/base/make-base.sh   # default: /usr/local/share/ca-certificates
#
# The host's extra CA certificates go into the image: where HTTPS leaves through a proxy that re-signs
# it, pip and apt inside a build need them. Needs mmdebstrap (Debian package) and root.
set -euo pipefail
ENGINE=${ENGINE:-$(command -v podman || command -v docker || true)}
TAG=${TAG:-localhost/python:3.11-slim}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CA_DIR=${CA_DIR:-/usr/local/share/ca-certificates}
[ -n "$ENGINE" ] || { echo "error: neither podman nor docker is installed" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/cas"
find "$CA_DIR" -maxdepth 1 -name '*.crt' -exec cp {} "$work/cas/" \; 2>/dev/null || true
mmdebstrap --variant=minbase --mode=root --quiet \
  --include=python3,python3-venv,ca-certificates \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook="cp $work/cas/. \"\$1/usr/local/share/ca-certificates/\" -r" \
  --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
  --customize-hook='ln -sf python3 "$1/usr/bin/python"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  "$SUITE" "$work/base.tar" \
  "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
  "deb http://deb.debian.org/debian-security $SUITE-security main"
"$ENGINE" import --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' "$work/base.tar" "$TAG" >/dev/null
echo "$TAG: $("$ENGINE" run --rm "$TAG" python3 --version)"
