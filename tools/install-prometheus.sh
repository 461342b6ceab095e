#!/usr/bin/env bash
# Installs the Prometheus server from Debian's package `prometheus`, idempotently (tools/apt-install.sh:
# nothing happens when a `prometheus` binary is already there). The binary's path is printed on stdout.
#
# The package's own service is not used (devcluster/prometheus.py starts Prometheus
# with its own configuration on a random port); recommends (node exporter) are skipped.
set -euo pipefail

log() { printf '[install-prometheus %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bin=$("$(dirname "$0")/apt-install.sh" prometheus prometheus)
# Where systemd runs, the package starts its own server on :9090; mdops starts its own instead.
if [ -d /run/systemd/system ] && systemctl is-active --quiet prometheus 2>/dev/null; then
	log "stopping and disabling the package's prometheus.service (not used by mdops)"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo systemctl disable --now prometheus >&2 || true
fi
log "$bin: $("$bin" --version 2>&1 | head -1)"
echo "$bin"
