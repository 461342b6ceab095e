#!/usr/bin/env bash
# Installs Debian packages with apt-get, without recommends: `tools/apt-install.sh PACKAGE...`.
# Runs `apt-get update` first only when apt's package lists do not know one of them. Needs root (or
# sudo) on Debian/Ubuntu. Used by the install-*.sh scripts, which first check what is missing; apt's
# output goes to stderr.
set -euo pipefail

log() { printf '[apt-install %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { log "need root (or sudo) to install $*"; exit 1; }
	sudo="sudo"
fi
command -v apt-get >/dev/null || { log "apt-get not found: install $* by other means"; exit 1; }

export DEBIAN_FRONTEND=noninteractive
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
for package in "$@"; do
	if [ -z "$(candidate "$package")" ] || [ "$(candidate "$package")" = "(none)" ]; then
		log "apt does not know $package yet: apt-get update"
		$sudo apt-get update -q >&2
		break
	fi
done
log "installing $* (apt-get install --no-install-recommends)"
$sudo apt-get install -y -q --no-install-recommends "$@" >&2
