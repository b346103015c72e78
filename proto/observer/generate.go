// Package observer holds Hubble's observer API (observer.Observer, flow.Flow, relay) as Cilium
// publishes it, generated into Go packages of this module so the daemon speaks the real wire
// format without depending on github.com/cilium/cilium (see README.md for the source).
package observer

// The .proto files keep Cilium's proto packages and import paths ("flow/flow.proto", ...);
// only their Go packages are remapped with M options.
//go:generate protoc -I . -I /usr/include --plugin=protoc-gen-go=../../bin/protoc-gen-go --plugin=protoc-gen-go-grpc=../../bin/protoc-gen-go-grpc --go_out=. --go_opt=paths=source_relative --go_opt=Mflow/flow.proto=github.com/isoobs/isoobs/proto/observer/flow --go_opt=Mrelay/relay.proto=github.com/isoobs/isoobs/proto/observer/relay --go_opt=Mobserver/observer.proto=github.com/isoobs/isoobs/proto/observer/observer --go-grpc_out=. --go-grpc_opt=paths=source_relative --go-grpc_opt=Mflow/flow.proto=github.com/isoobs/isoobs/proto/observer/flow --go-grpc_opt=Mrelay/relay.proto=github.com/isoobs/isoobs/proto/observer/relay --go-grpc_opt=Mobserver/observer.proto=github.com/isoobs/isoobs/proto/observer/observer flow/flow.proto relay/relay.proto observer/observer.proto
