// Package e2e holds end-to-end tests of the DNS probe and the node daemon
// in the lab: a real control plane, pods as network namespaces and cgroups on
// this host, the real CoreDNS, and DNS clients (dnsgen, or this test binary
// as a helper process) inside the pods. Every count is compared with the
// ground truth the clients recorded. Run as root: go test ./e2e
package e2e
