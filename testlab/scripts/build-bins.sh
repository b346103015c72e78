#!/usr/bin/env bash
# Builds the lab's real components from the Go module proxy and caches them
# outside the repo, keyed by version, so a second run rebuilds nothing.
#   kube-apiserver, kube-controller-manager, kube-scheduler  (k8s.io/kubernetes)
#   etcd                                                    (go.etcd.io/etcd/server/v3)
#   kwok                                                    (sigs.k8s.io/kwok)
#   coredns                                                 (github.com/coredns/coredns)
#   hubble CLI                                              (github.com/cilium/cilium/hubble)
#   kubelet, kubectl (the lab's real node, plugin discovery) (k8s.io/kubernetes)
#   krew, validate-krew-manifest                            (sigs.k8s.io/krew)
#   ig + its trace_dns gadget image (Inspektor Gadget, a peer for `make bench-peers`; built by the
#   kit in ../shared/peers/inspektor-gadget beside the repo, ISOOBS_IG_KIT overrides)
# Usage: build-bins.sh [component...]   (default: all but hubble)
# Prints nothing when everything is cached.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.4}
K8S_STAGING_VERSION=${K8S_STAGING_VERSION:-v0.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
CILIUM_VERSION=${CILIUM_VERSION:-v1.20.2}
KREW_VERSION=${KREW_VERSION:-v0.4.3}
IG_VERSION=v0.51.1 # the kit builds exactly this version (others are refused by the module proxy)

CACHE=${ISOOBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isoobs}
BIN=$CACHE/bin
mkdir -p "$BIN"
# One run at a time per cache: `make deps` and tests (controlplane.EnsureBinaries) share the
# $out.tmp directories; a second run waits, then finds the binaries built.
exec 9>"$CACHE/.build-bins.lock"
flock 9
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

log() { echo "build-bins: $*" >&2; }

# wrapper_module DIR MODULE VERSION -- creates a throw-away module that requires MODULE.
wrapper_module() {
	local dir=$1 mod=$2 ver=$3
	rm -rf "$dir" && mkdir -p "$dir"
	cat >"$dir/go.mod" <<EOF
module isoobs.local/buildwrap

go 1.26

require $mod $ver
EOF
	cat >"$dir/tools.go" <<EOF
//go:build tools

package buildwrap

import _ "$mod"
EOF
}

# k8s_wrapper DIR CMD... -- a throw-away module requiring k8s.io/kubernetes with each ./staging
# module replaced by the released one (go install refuses k8s.io/kubernetes for its replaces).
k8s_wrapper() {
	local w=$1; shift
	rm -rf "$w" && mkdir -p "$w"
	printf 'module isoobs.local/buildwrap\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n' "$K8S_VERSION" >"$w/go.mod"
	local kdir
	kdir=$(cd "$w" && go mod download -json k8s.io/kubernetes@"$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	local staging
	staging=$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$kdir/go.mod" | grep -v '^k8s.io/sample-' | sort -u)
	for m in $staging; do
		echo "replace $m => $m $K8S_STAGING_VERSION" >>"$w/go.mod"
	done
	{
		printf '//go:build tools\n\npackage buildwrap\n\nimport (\n'
		for c in "$@"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
		printf ')\n'
	} >"$w/tools.go"
	(cd "$w" && go mod tidy >/dev/null 2>&1 || true)
}

# k8s_build OUTDIR CMD... -- builds k8s.io/kubernetes commands into OUTDIR, stamped with the version.
k8s_build() {
	local out=$1; shift
	local w
	w=$CACHE/work/$(basename "$out")
	k8s_wrapper "$w" "$@"
	local major minor
	major=$(echo "$K8S_VERSION" | sed 's/^v\([0-9]*\)\..*/\1/')
	minor=$(echo "$K8S_VERSION" | sed 's/^v[0-9]*\.\([0-9]*\)\..*/\1/')
	local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor"
	rm -rf "$out.tmp" && mkdir -p "$out.tmp"
	for c in "$@"; do
		(cd "$w" && go build -trimpath -ldflags "$ld" -o "$out.tmp/$c" "k8s.io/kubernetes/cmd/$c")
	done
	rm -rf "$out" && mv "$out.tmp" "$out"
}

build_k8s() {
	local out=$BIN/k8s-$K8S_VERSION
	if [[ -x $out/kube-apiserver && -x $out/kube-controller-manager && -x $out/kube-scheduler ]]; then return; fi
	log "building kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION (~4 min, once)"
	k8s_build "$out" kube-apiserver kube-controller-manager kube-scheduler
}

# The lab's real node (kubelet) and a kubectl of the control plane's version (plugin discovery).
build_node() {
	local out=$BIN/k8s-node-$K8S_VERSION
	if [[ -x $out/kubelet && -x $out/kubectl ]]; then return; fi
	log "building kubelet, kubectl $K8S_VERSION (~12 min cold, once)"
	k8s_build "$out" kubelet kubectl
}

build_simple() { # name module version package outdir-binary-name
	local name=$1 mod=$2 ver=$3 pkg=$4 bin=$5
	local out=$BIN/$name-$ver
	if [[ -x $out/$bin ]]; then return; fi
	log "building $name $ver (once)"
	local w=$CACHE/work/$name
	wrapper_module "$w" "$mod" "$ver"
	sed -i "s#import _ \"$mod\"#import _ \"$pkg\"#" "$w/tools.go"
	(cd "$w" && go mod tidy >/dev/null 2>&1 || true)
	mkdir -p "$out.tmp"
	(cd "$w" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/$bin" "$pkg")
	rm -rf "$out" && mv "$out.tmp" "$out"
}

build_etcd() { build_simple etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3 etcd; }

build_kwok() {
	local out=$BIN/kwok-$KWOK_VERSION
	if [[ -x $out/kwok && -d $out/stages ]]; then return; fi
	build_simple kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok kwok
	local dir
	dir=$(cd "$CACHE/work/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
	mkdir -p "$out/stages"
	cp -r "$dir/kustomize/stage/." "$out/stages/"
	chmod -R u+w "$out/stages"
}

build_coredns() { build_simple coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns coredns; }

build_krew() {
	local out=$BIN/krew-$KREW_VERSION
	if [[ -x $out/krew && -x $out/validate-krew-manifest ]]; then return; fi
	log "building krew, validate-krew-manifest $KREW_VERSION (once)"
	local w=$CACHE/work/krew
	wrapper_module "$w" sigs.k8s.io/krew "$KREW_VERSION"
	printf '//go:build tools\n\npackage buildwrap\n\nimport (\n\t_ "sigs.k8s.io/krew/cmd/krew"\n\t_ "sigs.k8s.io/krew/cmd/validate-krew-manifest"\n)\n' >"$w/tools.go"
	(cd "$w" && go mod tidy >/dev/null 2>&1 || true)
	rm -rf "$out.tmp" && mkdir -p "$out.tmp"
	for c in krew validate-krew-manifest; do
		(cd "$w" && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/krew/internal/version.gitTag=$KREW_VERSION" -o "$out.tmp/$c" "sigs.k8s.io/krew/cmd/$c")
	done
	rm -rf "$out" && mv "$out.tmp" "$out"
}

build_hubble() { build_simple hubble github.com/cilium/cilium "$CILIUM_VERSION" github.com/cilium/cilium/hubble hubble; }

# ig (Inspektor Gadget) v0.51.1, patched for a kernel without kprobes, and its trace_dns gadget in
# ig's local OCI store: $BIN/ig-$IG_VERSION/{ig,varlib/ig/oci-store}. Run it with the kit's igw:
#   IGW=$BIN/ig-$IG_VERSION IG=$BIN/ig-$IG_VERSION/ig $KIT/igw run trace_dns:local --host ...
build_ig() {
	local out=$BIN/ig-$IG_VERSION
	if [[ -x $out/ig && -f $out/varlib/ig/oci-store/index.json ]]; then return; fi
	local here kit
	here=$(cd "$(dirname "$0")" && pwd)
	kit=${ISOOBS_IG_KIT:-$here/../../../shared/peers/inspektor-gadget}
	if [[ ! -x $kit/run.sh ]]; then
		echo "build-bins: no Inspektor Gadget kit at $kit (set ISOOBS_IG_KIT)" >&2
		exit 1
	fi
	log "building ig $IG_VERSION + trace_dns gadget (~12 min cold, once)"
	rm -rf "$out.tmp" && mkdir -p "$out.tmp"
	# IG_MIRROR must name a missing directory: the kit tests it unquoted, so an empty value
	# reads as "a mirror exists" and its git archive fails; missing = take the kit's copy.
	(IGW=$out.tmp IG_MIRROR=$out.tmp/no-mirror bash "$kit/run.sh" build >"$out.tmp/build.log" 2>&1 &&
		IGW=$out.tmp IG_MIRROR=$out.tmp/no-mirror bash "$kit/run.sh" image >>"$out.tmp/build.log" 2>&1) || {
		tail -30 "$out.tmp/build.log" >&2
		exit 1
	}
	# Keep the binary and the OCI store; the source tree and build outputs are only for the build.
	mv "$out.tmp/ig-0.51.1-nokprobe" "$out.tmp/ig.bin" && rm -f "$out.tmp/ig" && mv "$out.tmp/ig.bin" "$out.tmp/ig"
	rm -rf "$out.tmp/ig-src-0.51.1" "$out.tmp/gbuild" "$out.tmp/bin"
	rm -rf "$out" && mv "$out.tmp" "$out"
}

want=("$@")
if [[ ${#want[@]} -eq 0 ]]; then want=(etcd kwok coredns k8s); fi
for c in "${want[@]}"; do
	case $c in
	k8s) build_k8s ;;
	etcd) build_etcd ;;
	kwok) build_kwok ;;
	coredns) build_coredns ;;
	hubble) build_hubble ;;
	node) build_node ;;
	krew) build_krew ;;
	ig) build_ig ;;
	*) echo "build-bins: unknown component $c" >&2; exit 2 ;;
	esac
done
