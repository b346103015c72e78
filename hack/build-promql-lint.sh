#!/bin/sh
# Builds hack/promql-lint (Prometheus's own PromQL parser, the version promtool is built from) into
# ${ISOOBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isoobs}/bin/promql-lint-v0.307.0-<source hash>/promql-lint
# and prints that path. The dashboard and alert tests (deploy/dashboards, deploy/alerts) run it on
# every PromQL expression isoobs ships. ~10 s cold (the prometheus module is already in the module
# cache after build-promtool.sh); quiet when cached.
set -eu
VERSION=v0.307.0
here=$(cd "$(dirname "$0")/promql-lint" && pwd)
CACHE=${ISOOBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isoobs}
hash=$(cat "$here/main.go" "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
OUT=$CACHE/bin/promql-lint-$VERSION-$hash/promql-lint
if [ ! -x "$OUT" ]; then
	mkdir -p "$(dirname "$OUT")"
	(cd "$here" && go build -trimpath -o "$OUT.tmp" .)
	mv "$OUT.tmp" "$OUT"
fi
echo "$OUT"
