#!/usr/bin/env bash
# Builds the mdops image from the Dockerfile with podman (installed by tools/install-podman.sh) and
# prints its tag on stdout; progress, the base, the build time and the image's size go to stderr.
#
# The base: the official python:3.11-slim-bookworm when it is in podman's storage or can be pulled,
# else a Debian bookworm base bootstrapped locally by tools/debian-base.sh (cached per recipe).
# $MDOPS_BASE_IMAGE chooses one explicitly. podman's layer cache keeps the dependency layers, so a
# rebuild after a code change takes seconds, and one with nothing changed reuses every layer.
# $MDOPS_IMAGE names the image (default localhost/mdops:<version>).
#
# The build's RUN steps use the host's network (pip reaches PyPI; no container network needed), and
# get the host's CA bundle ($MDOPS_CA_BUNDLE, default Debian's) as a build secret, for pip behind a
# TLS-inspecting proxy: it is never stored in a layer.
#
# The image's size is budgeted: above $budget_mb MB the script fails (after tagging the image). The budget
# was 300 MB until the trading calendar (exchange_calendars, and with it pandas and numpy: about 95 MB
# without their test suites) became a dependency (359 MB then, of which the base is 130 MB); the command
# line's libraries (rich with pygments, click, httpx, plotext: about 20 MB) made it 379 MB.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
official=docker.io/library/python:3.11-slim-bookworm
budget_mb=400

log() { printf '[build-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

"$here/install-podman.sh" >/dev/null
version=$(awk -F'"' '/^version = / {print $2; exit}' "$repo/pyproject.toml")
tag="${MDOPS_IMAGE:-localhost/mdops:$version}"

base="${MDOPS_BASE_IMAGE:-}"
if [ -z "$base" ]; then
	if podman image exists "$official"; then
		base=$official
	elif error=$(timeout 300 podman pull --quiet "$official" 2>&1 >/dev/null); then
		base=$official
	else
		log "cannot pull $official (${error##*$'\n'}): using a locally bootstrapped Debian base"
		base=$("$here/debian-base.sh")
	fi
fi

ca="${MDOPS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
secret=()
[ -s "$ca" ] && secret=(--secret "id=ca-bundle,src=$ca")

log "building $tag on $base"
previous=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
began=$(date +%s)
# The stages that do not need each other (the console's libraries, the dependencies, tini) are built at
# once: a build with no cached layer took 56-59 s so on this 2-core machine, 87 s one stage at a time.
podman build --jobs "$(nproc)" --layers --network=host --pull=never "${secret[@]}" \
	--build-arg "PYTHON_IMAGE=$base" \
	--label "org.opencontainers.image.version=$version" \
	--label "org.opencontainers.image.base.name=$base" \
	--tag "$tag" "$repo" >&2
seconds=$(($(date +%s) - began))

size=$(podman image inspect --format '{{.Size}}' "$tag")
mb=$((size / 1000000))
id=$(podman image inspect --format '{{.Id}}' "$tag")
# The image the tag named before is dead weight (unless a container still uses it). Not `podman
# image prune`: it would remove the build cache too.
if [ -n "$previous" ] && [ "$previous" != "$id" ]; then
	podman rmi "$previous" >/dev/null 2>&1 || true
fi
log "built $tag (image ${id:0:12}) in $seconds s: $mb MB, budget $budget_mb MB"
if [ "$mb" -gt "$budget_mb" ]; then
	log "the image is over its size budget: $mb MB > $budget_mb MB"
	exit 1
fi
echo "$tag"
