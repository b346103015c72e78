package testlab

import "context"

// startCoreDNS runs CoreDNS for the lab. Placeholder until package testlab/coredns lands.
func (l *Lab) startCoreDNS(ctx context.Context) error { return nil }
