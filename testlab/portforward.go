package testlab

import (
	"context"
	"net/netip"
)

// ForwardPodPort routes port-forwards to the lab pod's port (through the API
// server and kwok, exactly the path `kubectl port-forward` takes) to target, a
// real address on this host — e.g. the isoobs daemon process playing that
// node's daemon pod.
func (l *Lab) ForwardPodPort(ctx context.Context, namespace, pod string, port int32, target netip.AddrPort) error {
	return l.CP.ForwardPodPort(ctx, namespace, pod, port, target.Addr().String(), int32(target.Port()))
}
