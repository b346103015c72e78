package main

import (
	"strings"
	"testing"
)

func TestGOMAXPROCSFlag(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	if got := newCommand().Flags().Lookup("gomaxprocs").DefValue; got != "1" {
		t.Errorf("--gomaxprocs defaults to %s, want 1", got)
	}
	t.Setenv("GOMAXPROCS", "3")
	if got := newCommand().Flags().Lookup("gomaxprocs").DefValue; got != "3" {
		t.Errorf("with GOMAXPROCS=3 --gomaxprocs defaults to %s, want 3 (the runtime already uses it)", got)
	}
	cmd := newCommand()
	cmd.SetArgs([]string{"--gomaxprocs", "-2", "--no-kubernetes"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "--gomaxprocs -2: use a positive number, or 0") {
		t.Errorf("--gomaxprocs -2: %v, want an error that says what to pass", err)
	}
}
