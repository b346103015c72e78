#!/usr/bin/env bash
# Runs the pinned golangci-lint (`make check`), building it once from the Go module proxy into
# ~/.cache/isoobs/bin/golangci-lint-<version>/ (ISOOBS_CACHE overrides), as testlab's
# build-bins.sh caches the lab's components. Arguments go to golangci-lint (default: run).
# Prints nothing extra when the binary is cached.
set -euo pipefail

GOLANGCI_LINT_VERSION=v2.15.0

CACHE=${ISOOBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isoobs}
out=$CACHE/bin/golangci-lint-$GOLANGCI_LINT_VERSION
if [[ ! -x $out/golangci-lint ]]; then
	mkdir -p "$CACHE/bin"
	# One build at a time per cache; a second caller waits, then finds the binary.
	exec 9>"$CACHE/.golangci-lint.lock"
	flock 9
	if [[ ! -x $out/golangci-lint ]]; then
		echo "golangci-lint.sh: building golangci-lint $GOLANGCI_LINT_VERSION (~4 min on idle cores, 16 min on busy ones; once)" >&2
		rm -rf "$out.tmp" && mkdir -p "$out.tmp"
		# Outside the repo's module: `go install pkg@version` builds with the tool's own go.mod.
		(cd "$out.tmp" && GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN=$out.tmp \
			go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION")
		rm -rf "$out" && mv "$out.tmp" "$out"
	fi
	exec 9>&-
fi
cd "$(dirname "$0")/.."
exec "$out/golangci-lint" "${@:-run}"
