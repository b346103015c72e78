//go:build linux

package realnode

import (
	"reflect"
	"testing"
)

func TestSplitRule(t *testing.T) {
	got, err := splitRule(`INPUT ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j KUBE-FIREWALL`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"INPUT", "!", "-s", "127.0.0.0/8", "-d", "127.0.0.0/8", "-m", "comment", "--comment", "block incoming localnet connections",
		"-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "KUBE-FIREWALL"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if _, err := splitRule(`X -m comment --comment "open`); err == nil {
		t.Error("unbalanced quote accepted")
	}
}

func TestUnescape(t *testing.T) {
	if got := unescape(`/tmp/a\040b/c`); got != "/tmp/a b/c" {
		t.Errorf("got %q", got)
	}
}
