#!/usr/bin/env bash
# Bootstraps the base image of the mdops image where no container registry is reachable: Debian
# bookworm (minbase) with python3 (3.11), python3-venv, python-is-python3 (`python`) and
# ca-certificates, made by mmdebstrap from Debian's mirror and imported into podman's storage as
# localhost/mdops-base:bookworm-<key>. The key is this file's hash, so the base is made once per
# recipe (about a minute) and is cached in podman's storage; bases of older recipes are removed.
# Prints the image's name on stdout; progress goes to stderr. Needs root (mmdebstrap's root mode).
#
# The image corresponds to the official python:3.11-slim-bookworm where it matters to the
# Dockerfile (python and python -m venv at 3.11, groupadd/useradd, CA certificates), with Debian's
# Python instead of python.org's. Documentation, manual pages and translations are left out
# (copyright files are kept); /usr is merged with the usr-is-merged package, not usrmerge (which
# would bring perl).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
suite=bookworm
packages=python3,python3-venv,python-is-python3,ca-certificates

log() { printf '[debian-base %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

key=$(sha256sum "$0" | cut -c1-12)
image="localhost/mdops-base:$suite-$key"
if podman image exists "$image"; then
	log "cached: $image"
	echo "$image"
	exit 0
fi

began=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "bootstrapping Debian $suite with $packages (mmdebstrap, about a minute)"
mmdebstrap --quiet --variant=minbase --include="$packages" \
	--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-include=/usr/share/locale/locale.alias' \
	"$suite" "$work/rootfs.tar" >&2
podman import --quiet \
	--change 'ENV LANG=C.UTF-8' \
	--change 'CMD ["/bin/bash"]' \
	--message "mmdebstrap $suite minbase + $packages (tools/debian-base.sh, key $key)" \
	"$work/rootfs.tar" "$image" >/dev/null
# Bases of older recipes are dead weight.
podman images --format '{{.Repository}}:{{.Tag}}' localhost/mdops-base | grep -vxF "$image" |
	xargs --no-run-if-empty podman rmi >/dev/null 2>&1 || true
log "made $image ($(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%d MB", $1 / 1e6}')) in $(($(date +%s) - began)) s"
echo "$image"
