package install

import (
	"errors"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	theirToken = "their-SPLUNK-token-8d1e"
	pemKey     = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
)

// A values tree as charts installed by their own docs hold them.
func foreignValues() map[string]any {
	return map[string]any{
		"splunkObservability": map[string]any{"accessToken": theirToken, "realm": "us0"},
		"splunkPlatform":      map[string]any{"token": "hec-TOKEN-1234", "clientCert": "cert-pem-xyz"},
		"agent": map[string]any{"config": map[string]any{"exporters": map[string]any{
			"signalfx": map[string]any{"access_token": "exporter-tok-77", "realm": "us0"},
			"otlphttp": map[string]any{"headers": map[string]any{"Authorization": "Bearer abcdef123"}},
		}}},
		"tls":         map[string]any{"ca": map[string]any{"key": pemKey, "certValidityDuration": 1095}},
		"hubble":      map[string]any{"redact": map[string]any{"kafka": map[string]any{"apiKey": true}}},
		"extraEnv":    []any{map[string]any{"name": "AWS_SECRET_ACCESS_KEY", "value": "aws-s3cr3t-val"}, map[string]any{"name": "LOG_LEVEL", "value": "debug"}},
		"tolerations": []any{map[string]any{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}},
		"clustermesh": map[string]any{"config": map[string]any{"clusters": []any{map[string]any{"name": "c2", "tls": map[string]any{"cert": "c2-cert-data"}}}}},
		"clusterName": "prod-eu",
	}
}

var hidden = []string{theirToken, "hec-TOKEN-1234", "cert-pem-xyz", "exporter-tok-77", "Bearer abcdef123", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "aws-s3cr3t-val", "c2-cert-data"}

func TestRedactValues(t *testing.T) {
	red := newRedactor()
	out, err := yaml.Marshal(red.values(foreignValues()))
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	for _, s := range hidden {
		if strings.Contains(text, s) {
			t.Errorf("%q shown:\n%s", s, text)
		}
	}
	for _, keep := range []string{"realm: us0", "clusterName: prod-eu", "apiKey: true", "value: debug", "key: node-role.kubernetes.io/control-plane", "certValidityDuration: 1095"} {
		if !strings.Contains(text, keep) {
			t.Errorf("%q redacted too:\n%s", keep, text)
		}
	}
	// Every known secret path is redacted, whatever its key.
	for _, p := range KnownSecretPaths {
		v := map[string]any{}
		cur := v
		parts := strings.Split(strings.ReplaceAll(p, "[]", ""), ".")
		for _, k := range parts[:len(parts)-1] {
			n := map[string]any{}
			cur[k] = n
			cur = n
		}
		cur[parts[len(parts)-1]] = "value-of-" + p
		if strings.Contains(p, "[]") {
			continue // list paths are covered by foreignValues
		}
		if b, _ := yaml.Marshal(newRedactor().values(v)); strings.Contains(string(b), "value-of-") {
			t.Errorf("known secret path %s shown: %s", p, b)
		}
	}
	// Free text and errors: the strings hidden above are scrubbed, base64 too.
	if s := red.text("helm: bad value " + theirToken + " / c2VjcmV0"); strings.Contains(s, theirToken) {
		t.Errorf("text: %s", s)
	}
	if e := red.err(errors.New("x: aws-s3cr3t-val")); strings.Contains(e.Error(), "aws-s3cr3t-val") {
		t.Errorf("err: %v", e)
	}
	m := red.manifest("---\n# Source: x/secret.yaml\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  k: bXktb3duLXBhc3N3b3Jk\nstringData:\n  t: plain-text-secret\n---\n# Source: x/cm.yaml\napiVersion: v1\nkind: ConfigMap\ndata:\n  relay: token " + theirToken + "\n")
	for _, s := range []string{"bXktb3duLXBhc3N3b3Jk", "plain-text-secret", theirToken} {
		if strings.Contains(m, s) {
			t.Errorf("manifest shows %q:\n%s", s, m)
		}
	}
	if !strings.Contains(m, "# Source: x/secret.yaml") || strings.Index(m, "kind: Secret") > strings.Index(m, "kind: ConfigMap") {
		t.Errorf("manifest lost its sources or order:\n%s", m)
	}
}

func TestValuesDiffRedactsAndNamesChangedSecrets(t *testing.T) {
	ours := foreignValues()
	ours["splunkObservability"] = map[string]any{"accessToken": "our-token-0000", "realm": "us1"}
	diff, err := valuesDiff(newRedactor(), foreignValues(), ours)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append(hidden, "our-token-0000") {
		if strings.Contains(diff, s) {
			t.Errorf("diff shows %q:\n%s", s, diff)
		}
	}
	for _, want := range []string{"-  realm: us0", "+  realm: us1", "accessToken: " + Redacted, "secret values that differ (not shown): splunkObservability.accessToken"} {
		if !strings.Contains(diff, want) {
			t.Errorf("diff lacks %q:\n%s", want, diff)
		}
	}
}
