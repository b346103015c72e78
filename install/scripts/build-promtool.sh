#!/bin/sh
# Builds promtool with Kubernetes service discovery (Debian's prometheus
# package strips it, so its promtool rejects kubernetes_sd_configs) into
# ${ISOOBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isoobs}/bin/promtool-v0.307.0/promtool.
# `go install ...@version` refuses the module (exclude directives), so it
# builds from a throw-away module. Quiet when cached.
set -eu
VERSION=v0.307.0
CACHE=${ISOOBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isoobs}
OUT=$CACHE/bin/promtool-$VERSION/promtool
[ -x "$OUT" ] && exit 0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
cat > go.mod <<MOD
module promtoolbuild

go 1.26.0

require github.com/prometheus/prometheus $VERSION
MOD
printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/prometheus/prometheus/cmd/promtool"\n' > tools.go
go mod tidy >/dev/null 2>&1
mkdir -p "$(dirname "$OUT")"
go build -o "$OUT.tmp" github.com/prometheus/prometheus/cmd/promtool
mv "$OUT.tmp" "$OUT"
echo "built $OUT"
