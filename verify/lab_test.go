package verify_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"

	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/verify"
	"github.com/isoobs/isoobs/verify/verifytest"
)

func labOptions(lab *testlab.Lab) verify.Options {
	return verify.Options{
		Client:  lab.Client(),
		Dynamic: dynamic.NewForConfigOrDie(lab.RESTConfig()),
		Config:  lab.RESTConfig(),
	}
}

func runVerify(t *testing.T, opts verify.Options) *verify.Report {
	t.Helper()
	start := time.Now()
	rep, err := verify.Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_ = rep.Format(&buf, verify.FormatOptions{MaxItems: 20})
	t.Logf("verify took %s:\n%s", time.Since(start).Round(time.Millisecond), buf.String())
	return rep
}

func TestLabStack(t *testing.T) {
	lab := testlab.StartForTest(t, testlab.Options{NoCoreDNS: true})
	stack := verifytest.Install(t, lab)
	_ = stack
	rep := runVerify(t, labOptions(lab))
	_ = rep
}
