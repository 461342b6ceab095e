#!/usr/bin/env bash
# Installs the Prometheus server from Debian's package `prometheus`, idempotently:
# nothing happens when a `prometheus` binary is already on PATH (or in /usr/bin).
# Runs `apt-get update` first only when apt's package lists do not know the package.
# Needs root (or sudo) on a Debian/Ubuntu machine. Progress goes to stderr; the
# binary's path is printed on stdout.
#
# The package's own service is not used (devcluster/prometheus.py starts Prometheus
# with its own configuration on a random port); recommends (node exporter) are skipped.
set -euo pipefail

log() { printf '[install-prometheus %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

found() { command -v prometheus 2>/dev/null || { [ -x /usr/bin/prometheus ] && echo /usr/bin/prometheus; }; }

if bin=$(found); then
	log "already installed: $bin ($("$bin" --version 2>&1 | head -1))"
	echo "$bin"
	exit 0
fi

"$(dirname "$0")/apt-install.sh" prometheus

bin=$(found) || { log "prometheus installed but not found on PATH"; exit 1; }
# Where systemd runs, the package starts its own server on :9090; mdops starts its own instead.
if [ -d /run/systemd/system ] && systemctl is-active --quiet prometheus 2>/dev/null; then
	log "stopping and disabling the package's prometheus.service (not used by mdops)"
	if [ "$(id -u)" -eq 0 ]; then systemctl disable --now prometheus >&2; else sudo systemctl disable --now prometheus >&2; fi || true
fi
log "installed: $bin ($("$bin" --version 2>&1 | head -1))"
echo "$bin"
