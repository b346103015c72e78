// Package proto holds the isoobs gRPC API; generated code lives in isoobs/v1.
package proto

//go:generate protoc -I . -I /usr/include --plugin=protoc-gen-go=../bin/protoc-gen-go --plugin=protoc-gen-go-grpc=../bin/protoc-gen-go-grpc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative isoobs/v1/isoobs.proto
