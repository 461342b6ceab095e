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

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { log "need root (or sudo) to install ${missing[*]}"; exit 1; }
	sudo="sudo"
fi
command -v apt-get >/dev/null || { log "apt-get not found: install ${missing[*]} by other means"; exit 1; }

export DEBIAN_FRONTEND=noninteractive
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
for package in "${missing[@]}"; do
	if [ -z "$(candidate "$package")" ] || [ "$(candidate "$package")" = "(none)" ]; then
		log "apt does not know $package yet: apt-get update"
		$sudo apt-get update -q >&2
		break
	fi
done
log "installing ${missing[*]} (apt-get install --no-install-recommends)"
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2

for package in "${packages[@]}"; do
	command -v "$package" >/dev/null || { log "$package installed but not found on PATH"; exit 1; }
done
log "installed: $(podman --version)"
command -v podman
