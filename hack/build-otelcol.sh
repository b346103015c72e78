#!/bin/sh
# Builds hack/otelcol (OpenTelemetry Collector contrib v0.161.0: prometheus receiver, filter
# processor, file exporter) into
# ${ISOOBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isoobs}/bin/otelcol-v0.161.0-<source hash>/otelcol
# and prints that path. NOT run by make deps: measured cold, 41m48s wall (17.5 min user CPU) on a
# busy 2-core lab machine, mostly the Prometheus server's service discovery SDKs the receiver
# pulls in. Quiet when cached. verify's TestOtelcolTakesIsoobsAllowlist runs the splunk pipeline's
# isoobs receiver and allowlist through it when it is cached, and skips otherwise.
#
# --check builds nothing: it says (on stderr) whether the collector is cached, so `make test`
# can tell why that test skips. Always exits 0.
set -eu
here=$(cd "$(dirname "$0")/otelcol" && pwd)
CACHE=${ISOOBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isoobs}
hash=$(cat "$here/main.go" "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
OUT=$CACHE/bin/otelcol-v0.161.0-$hash/otelcol
if [ "${1:-}" = "--check" ]; then
	if [ -x "$OUT" ]; then
		echo "otelcol: cached at $OUT (TestOtelcolTakesIsoobsAllowlist runs)" >&2
	else
		echo "otelcol: not built, so TestOtelcolTakesIsoobsAllowlist skips; sh hack/build-otelcol.sh builds it (cold: 41m48s wall, 17.5 min CPU measured on a busy 2-core machine)" >&2
	fi
	exit 0
fi
if [ ! -x "$OUT" ]; then
	mkdir -p "$(dirname "$OUT")"
	(cd "$here" && go build -trimpath -o "$OUT.tmp" .)
	mv "$OUT.tmp" "$OUT"
fi
echo "$OUT"
