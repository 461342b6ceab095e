#!/usr/bin/env bash
# Installs what builds and runs the mdops image, from Debian's packages, idempotently: podman (the
# engine), buildah (its builder), runc (the runtime: crun fails on a host with a mixed cgroup v1/v2
# layout) and mmdebstrap (bootstraps a Debian base image where no container registry is reachable).
# Nothing happens when all four are on PATH. Runs `apt-get update` first only when apt's package
# lists do not know them. Needs root (or sudo) on Debian. Progress goes to stderr; podman's path is
# printed on stdout.
#
# Recommends are skipped: podman runs as root here (no uidmap, fuse-overlayfs, slirp4netns), and
# mdops's builds and containers use the host's network or none (the network stack that podman's
# dependencies bring, CNI plugins, stays unused). The settings podman needs on such a host (runtime,
# ulimits) are in tools/containers.conf, which mdops's scripts and tests pass in $CONTAINERS_CONF.
set -euo pipefail

log() { printf '[install-podman %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

packages=(podman buildah runc mmdebstrap)
missing=()
for package in "${packages[@]}"; do
	command -v "$package" >/dev/null || missing+=("$package")
done
if [ "${#missing[@]}" -eq 0 ]; then
	log "already installed: $(podman --version), $(buildah --version | cut -d' ' -f1-3), runc $(runc --version | awk 'NR==1 {print $3}'), mmdebstrap $(mmdebstrap --version | awk '{print $2}')"
	command -v podman
	exit 0
fi

"$(dirname "$0")/apt-install.sh" "${missing[@]}"

for package in "${packages[@]}"; do
	command -v "$package" >/dev/null || { log "$package installed but not found on PATH"; exit 1; }
done
log "installed: $(podman --version)"
command -v podman
