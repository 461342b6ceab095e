#!/usr/bin/env bash
# Builds the local control plane's binaries (etcd, kube-apiserver,
# kube-controller-manager, kubectl) from the pinned Go modules in tools/ into
# a cache outside the repository, and prints the cache's bin directory on
# stdout. Progress goes to stderr. A binary already built from the same
# sources is not built again; the first (cold) build takes minutes.
#
# Binaries found in $KUBEBUILDER_ASSETS (the envtest convention) are linked
# into the cache instead of being built.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${MDOPS_CACHE:-$HOME/.cache/mdops}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"

log() { printf '[build-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The cache key is the module's sources and this script: a change of pin or flags rebuilds.
key() { cat "$0" "$here/$1/go.mod" "$here/$1/go.sum" "$here/$1"/*.go | sha256sum | cut -c1-12; }

# go build -v prints each package as it compiles it; count them for progress. The package is the module's
# own main package, or another one the module requires.
build() {
	local module="$1" out="$2" ldflags="${3:-}" package="${4:-.}" total
	total=$(cd "$here/$module" && go list -deps "$package" | wc -l)
	log "building $(basename "$out") from $module ($total packages; cold builds take minutes)"
	(cd "$here/$module" && go build -v -ldflags "$ldflags" -o "$out.tmp" "$package" 2>&1) | awk -v total="$total" -v m="$module" '
		/^#|: / { print > "/dev/stderr"; next }
		{ n++; if (n % 100 == 0) printf "[build-k8s] %s: %d/%d packages compiled\n", m, n, total > "/dev/stderr" }'
	mv "$out.tmp" "$out"
	log "built $out"
}

# The version a module requires, from a one-line or a block require.
required() { awk -v m="$2" '($1 == "require" && $2 == m) {print $3} ($1 == m && $2 ~ /^v/) {print $2}' "$here/$1/go.mod"; }
kube_version=$(required kube k8s.io/kubernetes)
etcd_version=$(required etcd go.etcd.io/etcd/server/v3)
bin="$cache/k8s/$kube_version-$(key kube)-etcd-$etcd_version-$(key etcd)/bin"
mkdir -p "$bin"
# Builds of older pins are dead weight (each ~200 MB).
find "$cache/k8s" -mindepth 1 -maxdepth 1 ! -name "$(basename "$(dirname "$bin")")" -exec rm -rf {} +

from_assets() { [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/$1" ]]; }
# A link made only when it is not there yet: ln -sf replaces it, and a test worker running this script
# beside another one that starts the binary would find no file for a moment.
link() { [[ "$(readlink "$2")" == "$1" ]] || ln -sf "$1" "$2"; }

if from_assets etcd; then
	link "$KUBEBUILDER_ASSETS/etcd" "$bin/etcd"
elif [[ ! -x "$bin/etcd" ]]; then
	build etcd "$bin/etcd"
fi

# Stamp the version, or /version and `kubectl version` say v0.0.0.
v=k8s.io/component-base/version minor=${kube_version#v1.}
stamp="-X $v.gitVersion=$kube_version -X $v.gitMajor=1 -X $v.gitMinor=${minor%%.*}"
kube_names=(kube-apiserver kube-controller-manager)
need_kube=0
for name in "${kube_names[@]}"; do from_assets "$name" || need_kube=1; done
if [[ $need_kube == 1 && ! -x "$bin/kube" ]]; then
	build kube "$bin/kube" "$stamp"
fi
for name in "${kube_names[@]}"; do
	if from_assets "$name"; then link "$KUBEBUILDER_ASSETS/$name" "$bin/$name"; else link kube "$bin/$name"; fi
done
# kubectl on its own: in the multi-call binary each call also paid the start-up of the control plane's
# components, a third of its CPU (tests and scripts call it often). It shares the compile of its packages.
if from_assets kubectl; then
	link "$KUBEBUILDER_ASSETS/kubectl" "$bin/kubectl"
elif [[ ! -x "$bin/kubectl" ]]; then
	build kube "$bin/kubectl" "$stamp" k8s.io/kubernetes/cmd/kubectl
fi

log "ready: kubernetes $kube_version, etcd $etcd_version in $bin"
echo "$bin"
