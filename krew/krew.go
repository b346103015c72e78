// Package krew holds the krew plugin manifest template that `make release` renders (package
// release) into dist/release/isoobs.yaml with the release's archives and sha256s.
package krew

import _ "embed"

// ManifestTemplate is isoobs.yaml.tmpl, a text/template over release.ManifestData.
//
//go:embed isoobs.yaml.tmpl
var ManifestTemplate string
