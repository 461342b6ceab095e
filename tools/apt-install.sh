#!/usr/bin/env bash
# Usage: tools/apt-install.sh COMMAND PACKAGE...
# Installs Debian PACKAGEs (apt-get install --no-install-recommends), idempotently: nothing happens when
# COMMAND is already on PATH (or in /usr/bin). Runs `apt-get update` first only when apt's package lists
# do not know the first package. Needs root (or sudo) on a Debian/Ubuntu machine. Progress goes to
# stderr; COMMAND's path is printed on stdout.
set -euo pipefail

command=$1
shift
log() { printf '[apt-install %s %s] %s\n' "$command" "$(date +%H:%M:%S)" "$*" >&2; }

found() { command -v "$command" 2>/dev/null || { [ -x "/usr/bin/$command" ] && echo "/usr/bin/$command"; }; }

if bin=$(found); then
	log "already installed: $bin"
	echo "$bin"
	exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { log "need root (or sudo) to install the Debian package(s) $*"; exit 1; }
	sudo="sudo"
fi
command -v apt-get >/dev/null || { log "apt-get not found: install $* by other means"; exit 1; }

export DEBIAN_FRONTEND=noninteractive
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
if [ -z "$(candidate "$1")" ] || [ "$(candidate "$1")" = "(none)" ]; then
	log "apt does not know $1 yet: apt-get update"
	$sudo apt-get update -q >&2
fi
log "installing $* ($1 $(candidate "$1"); apt-get install --no-install-recommends)"
$sudo apt-get install -y -q --no-install-recommends "$@" >&2

bin=$(found) || { log "$* installed but $command not found on PATH"; exit 1; }
log "installed: $bin"
echo "$bin"
