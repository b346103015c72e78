package plugin

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/isoobs/isoobs/plugin/top"
)

// peerNamesRefresh is how often the IP → pod/service table is listed again.
const peerNamesRefresh = 30 * time.Second

// clusterPeerNames names peer IPs from the cluster's pods (their podIPs; host-network pods
// share their node's IP and are named as that node) and Services (their clusterIPs), listed
// when the view starts and every peerNamesRefresh.
type clusterPeerNames struct {
	client kubernetes.Interface
	mu     sync.RWMutex
	byIP   map[netip.Addr]top.PeerName
}

// startPeerNames lists the cluster's pods and Services once and then in the background until
// ctx ends. The error (no access, say) leaves peers shown by IP.
func startPeerNames(ctx context.Context, client kubernetes.Interface, timeout time.Duration) (*clusterPeerNames, error) {
	n := &clusterPeerNames{client: client}
	if err := n.refresh(ctx, timeout); err != nil {
		return nil, err
	}
	go func() {
		t := time.NewTicker(peerNamesRefresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = n.refresh(ctx, timeout) // keep the last table on a failed refresh
			}
		}
	}()
	return n, nil
}

func (n *clusterPeerNames) refresh(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	byIP := map[netip.Addr]top.PeerName{}
	nodes, err := n.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err == nil {
		for i := range nodes.Items {
			for _, a := range nodes.Items[i].Status.Addresses {
				if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
					addName(byIP, a.Address, top.PeerName{Kind: "node", Name: nodes.Items[i].Name})
				}
			}
		}
	}
	// Pods, page by page; host-network pods would claim their node's IP.
	opts := metav1.ListOptions{Limit: 500}
	for {
		pods, err := n.client.CoreV1().Pods("").List(ctx, opts)
		if err != nil {
			return fmt.Errorf("list pods to name peers: %w", err)
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			for _, ip := range p.Status.PodIPs {
				addName(byIP, ip.IP, top.PeerName{Kind: "pod", Namespace: p.Namespace, Name: p.Name})
			}
		}
		if pods.Continue == "" {
			break
		}
		opts.Continue = pods.Continue
	}
	svcs, err := n.client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list services to name peers: %w", err)
	}
	for i := range svcs.Items {
		s := &svcs.Items[i]
		for _, ip := range s.Spec.ClusterIPs {
			addName(byIP, ip, top.PeerName{Kind: "service", Namespace: s.Namespace, Name: s.Name})
		}
	}
	n.mu.Lock()
	n.byIP = byIP
	n.mu.Unlock()
	return nil
}

func addName(byIP map[netip.Addr]top.PeerName, ip string, name top.PeerName) {
	if a, err := netip.ParseAddr(ip); err == nil {
		byIP[a.Unmap()] = name
	}
}

// Lookup is a top.PeerNames.
func (n *clusterPeerNames) Lookup(ip netip.Addr) (top.PeerName, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	name, ok := n.byIP[ip]
	return name, ok
}
