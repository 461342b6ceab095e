#!/usr/bin/env bash
# Builds the helm CLI from the pinned wrapper module tools/helm/ (helm.sh/helm/v3,
# with its Kubernetes libraries raised to the control plane's 0.34 patch, so a
# warm Go build cache shares their compile with tools/build-k8s.sh) into a cache
# outside the repository, and prints the cache's bin directory on stdout.
# Progress goes to stderr. A binary already built from the same sources is not
# built again; the first (cold) build takes minutes.
#
# A helm found in $MDOPS_HELM (an executable path) is linked into the cache
# instead of being built; the tests still check its version.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${MDOPS_CACHE:-$HOME/.cache/mdops}"
# The same flags as tools/build-k8s.sh: with them the Go build cache is shared.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"

log() { printf '[build-helm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The cache key is the module's pins and this script: a change of pin or flags rebuilds.
key() { cat "$0" "$here/helm/go.mod" "$here/helm/go.sum" | sha256sum | cut -c1-12; }

# The version a module requires, from a one-line or a block require.
required() { awk -v m="$1" '($1 == "require" && $2 == m) {print $3} ($1 == m && $2 ~ /^v/) {print $2}' "$here/helm/go.mod"; }
helm_version=$(required helm.sh/helm/v3)
client_go=$(required k8s.io/client-go)
minor=${client_go#v0.}
minor=${minor%%.*}
bin="$cache/helm/$helm_version-$(key)/bin"
mkdir -p "$bin"
# Builds of older pins are dead weight.
find "$cache/helm" -mindepth 1 -maxdepth 1 ! -name "$(basename "$(dirname "$bin")")" -exec rm -rf {} +

pkg=helm.sh/helm/v3/cmd/helm
if [[ -n "${MDOPS_HELM:-}" && -x "$MDOPS_HELM" ]]; then
	ln -sf "$MDOPS_HELM" "$bin/helm"
elif [[ ! -x "$bin/helm" ]]; then
	total=$(cd "$here/helm" && go list -deps "$pkg" | wc -l)
	log "building helm $helm_version ($total packages; cold builds take minutes)"
	# Stamp the version and the Kubernetes version helm assumes (as helm's own Makefile does),
	# or `helm version` says v3.19+unreleased and lint checks against the wrong API versions.
	ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
	ldflags+=" -X helm.sh/helm/v3/internal/version.metadata= -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
	for p in lint/rules chartutil; do
		ldflags+=" -X helm.sh/helm/v3/pkg/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/$p.k8sVersionMinor=$minor"
	done
	# go build -v prints each package as it compiles it; count them for progress.
	(cd "$here/helm" && go build -v -ldflags "$ldflags" -o "$bin/helm.tmp" "$pkg" 2>&1) | awk -v total="$total" '
		/^#|: / { print > "/dev/stderr"; next }
		{ n++; if (n % 100 == 0) printf "[build-helm] helm: %d/%d packages compiled\n", n, total > "/dev/stderr" }'
	mv "$bin/helm.tmp" "$bin/helm"
	log "built $bin/helm"
fi

log "ready: helm $helm_version (kubernetes 1.$minor libraries) in $bin"
echo "$bin"
