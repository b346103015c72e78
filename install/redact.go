package install

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Redacted replaces a secret value wherever install shows values: the diff against a release
// someone else installed, --show-values, --dry-run manifests and errors.
const Redacted = "<redacted>"

// secretKey matches value keys that hold credentials. Only string values are redacted under
// such a key: booleans and numbers (hubble.redact.kafka.apiKey: true) carry no secret.
var secretKey = regexp.MustCompile(`(?i)token|password|passwd|secret|key|credential|authorization|bearer`)

// KnownSecretPaths are the charts' secret values by path ("[]" for any list item), redacted
// whatever their key is called. Most also match secretKey; they are listed so a chart renaming
// a key is caught by the tests. Tetragon's charts (1.0 OSS, 1.18 enterprise) take no secret
// values of their own; their extraEnv lists are covered by the name/value rule (redactTree).
var KnownSecretPaths = []string{
	// splunk-otel-collector (https://github.com/signalfx/splunk-otel-collector-chart values.yaml)
	"splunkObservability.accessToken",
	"splunkPlatform.token",
	"splunkPlatform.clientKey",
	"splunkPlatform.clientCert",
	"splunkPlatform.caFile",
	// cilium: TLS private keys the chart takes inline
	"tls.ca.key",
	"tls.ca.cert",
	"hubble.tls.ca.key",
	"hubble.tls.server.key",
	"hubble.relay.tls.client.key",
	"hubble.relay.tls.server.key",
	"hubble.ui.tls.client.key",
	"clustermesh.apiserver.tls.ca.key",
	"clustermesh.apiserver.tls.server.key",
	"clustermesh.apiserver.tls.admin.key",
	"clustermesh.apiserver.tls.client.key",
	"clustermesh.apiserver.tls.remote.key",
	"clustermesh.config.clusters[].tls.key",
	"clustermesh.config.clusters[].tls.cert",
	"clustermesh.config.clusters[].tls.caCert",
}

// redactor replaces secret values in values trees and remembers the strings it hid, so the same
// strings can be scrubbed from free text (rendered manifests, errors from Helm or the API).
type redactor struct {
	seen map[string]bool
}

func newRedactor(extra ...string) *redactor {
	r := &redactor{seen: map[string]bool{}}
	for _, s := range extra {
		r.remember(s)
	}
	return r
}

func (r *redactor) remember(s string) {
	// Short strings ("", "1", "us0") would scrub unrelated text and are no credential.
	if len(s) >= 6 {
		r.seen[s] = true
	}
}

// values returns a redacted deep copy of a values tree.
func (r *redactor) values(v map[string]any) map[string]any {
	out, _ := r.tree(v, "", false).(map[string]any)
	return out
}

func isPEM(s string) bool { return strings.Contains(s, "-----BEGIN ") }

func (r *redactor) tree(v any, path string, secret bool) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		// A {name: SECRET_ISH, value: x} item (extraEnv) holds its secret under "value".
		nameSecret := false
		if n, ok := t["name"].(string); ok && secretKey.MatchString(n) {
			nameSecret = true
		}
		_, selector := t["operator"] // tolerations, matchExpressions: "key" is a label key
		for k, e := range t {
			p := k
			if path != "" {
				p = path + "." + k
			}
			sec := secret || (secretKey.MatchString(k) && !(k == "key" && selector)) ||
				(nameSecret && k == "value") || slices.Contains(KnownSecretPaths, p)
			out[k] = r.tree(e, p, sec)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = r.tree(e, path+"[]", secret)
		}
		return out
	case string:
		if (secret || isPEM(t)) && t != "" {
			r.remember(t)
			return Redacted
		}
		return t
	default:
		return v
	}
}

// text scrubs every remembered secret (and its base64 form, as in a Secret's data) from s.
func (r *redactor) text(s string) string {
	keys := make([]string, 0, len(r.seen))
	for k := range r.seen {
		keys = append(keys, k)
	}
	// Longest first, so a secret containing another is replaced whole.
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	for _, k := range keys {
		s = strings.ReplaceAll(s, k, Redacted)
		s = strings.ReplaceAll(s, base64.StdEncoding.EncodeToString([]byte(k)), Redacted)
	}
	return s
}

// err scrubs an error's text; it returns err itself when nothing was hidden.
func (r *redactor) err(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if s := r.text(msg); s != msg {
		return errors.New(s)
	}
	return err
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// manifest redacts a rendered manifest (documents in their order): every Secret's data and stringData values, and every
// remembered secret string anywhere else.
func (r *redactor) manifest(m string) string {
	var b strings.Builder
	for _, doc := range docSep.Split(m, -1) {
		doc = strings.Trim(doc, "\n")
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj := map[string]any{}
		if err := yaml.Unmarshal([]byte(doc), &obj); err == nil && obj["kind"] == "Secret" {
			for _, field := range []string{"data", "stringData"} {
				if d, ok := obj[field].(map[string]any); ok {
					for k, v := range d {
						if s, ok := v.(string); ok {
							r.remember(s)
						}
						d[k] = Redacted
					}
				}
			}
			source := ""
			if line, _, ok := strings.Cut(doc, "\n"); ok && strings.HasPrefix(line, "# Source: ") {
				source = line + "\n"
			}
			data, err := yaml.Marshal(obj)
			if err == nil {
				doc = source + string(data)
			}
		}
		fmt.Fprintf(&b, "---\n%s\n", strings.Trim(doc, "\n"))
	}
	return r.text(b.String())
}

// changedSecrets lists the paths whose secret values differ between two values trees (their
// redacted forms are equal, so a diff alone would not show the change).
func changedSecrets(old, new map[string]any) []string {
	var out []string
	var walk func(a, b any, path string)
	walk = func(a, b any, path string) {
		am, aok := a.(map[string]any)
		bm, bok := b.(map[string]any)
		if aok && bok {
			keys := map[string]bool{}
			for k := range am {
				keys[k] = true
			}
			for k := range bm {
				keys[k] = true
			}
			for k := range keys {
				p := k
				if path != "" {
					p = path + "." + k
				}
				walk(am[k], bm[k], p)
			}
			return
		}
		ra, rb := newRedactor().tree(a, path, pathSecret(path)), newRedactor().tree(b, path, pathSecret(path))
		if fmt.Sprint(ra) == fmt.Sprint(rb) && fmt.Sprint(a) != fmt.Sprint(b) {
			out = append(out, path)
		}
	}
	walk(old, new, "")
	sort.Strings(out)
	return out
}

// pathSecret says whether the value at a dotted path is redacted by its path: a secret-like key
// on the way to it, or a known secret path.
func pathSecret(path string) bool {
	for _, k := range strings.Split(path, ".") {
		if secretKey.MatchString(k) {
			return true
		}
	}
	return slices.Contains(KnownSecretPaths, path)
}
