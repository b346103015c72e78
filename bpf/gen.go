package bpf

// The generated *_bpfel.go / *_bpfel.o files are committed so that `go build`
// needs no clang; `go generate ./bpf` (clang + libbpf-dev) rebuilds them.
//go:generate go tool bpf2go -target bpfel -cc clang -cflags "-O2 -g -Wall" -type server_counters dns dns.c
//go:generate go tool bpf2go -target bpfel -cc clang -cflags "-O2 -g -Wall" tcp tcp.c
//go:generate go tool bpf2go -target bpfel -cc clang -cflags "-O2 -g -Wall" ksym ksym.c
