# isoobs — kubectl plugin + per-node eBPF daemon for DNS/TCP/drop/HTTP top views.
# The two commands that matter: `make demo` and `make test` (run as root).

GO        ?= go
BIN       := bin
GOTESTFLAGS ?=
# Lab tests share the machine's kernel objects (cgroups, veths); one package at a time
# keeps exact-count tests honest on 2 cores.
TEST_TIMEOUT ?= 75m
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
# The commit's time, not now: two builds of one commit stamp the same date.
BUILD_DATE ?= $(shell TZ=UTC git show -s --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ HEAD 2>/dev/null)
LDFLAGS   := -X github.com/isoobs/isoobs/buildinfo.Version=$(VERSION) -X github.com/isoobs/isoobs/buildinfo.Commit=$(COMMIT) -X github.com/isoobs/isoobs/buildinfo.Date=$(BUILD_DATE)
# `make image` writes the daemon image's index digest; a plugin built after it installs that image by digest.
IMAGE_REPO ?= ghcr.io/isoobs/isoobs-daemon
IMAGE_DIGEST = $(shell cat dist/image/index-digest 2>/dev/null)
PLUGIN_LDFLAGS = $(LDFLAGS)$(if $(IMAGE_DIGEST), -X github.com/isoobs/isoobs/deploy.DaemonImageRepository=$(IMAGE_REPO) -X github.com/isoobs/isoobs/deploy.DaemonImageTag=$(shell cat dist/image/version 2>/dev/null) -X github.com/isoobs/isoobs/deploy.DaemonImageDigest=$(IMAGE_DIGEST))

.PHONY: all deps generate generate-check build test unit check demo bench bench-probe-parts lint lab-up lab-down clean

all: build

## deps: apt packages, bpffs, and the lab's real components (cached in ~/.cache/isoobs)
deps:
	@bash hack/deps.sh

$(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc:
	@mkdir -p $(BIN)
	@$(GO) build -o $(BIN)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	@$(GO) build -o $(BIN)/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc

# The committed objects and code are byte for byte what these make (Debian 12's packages, from
# make deps); another clang or protoc makes other bytes, so generate refuses them.
GEN_CLANG  := Debian clang version 14.
GEN_PROTOC := libprotoc 3.21.12
GENERATED  := ':(glob)**/*_bpfel.go' ':(glob)**/*_bpfel.o' ':(glob)**/*.pb.go'

## generate: bpf2go objects (Debian's clang) and protobuf code (protoc), all committed
generate: $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	@clang --version | head -1 | grep -qF '$(GEN_CLANG)' || \
	  { echo "make generate: the eBPF objects are built with $(GEN_CLANG)x (apt-get install clang), not: $$(clang --version | head -1)" >&2; exit 1; }
	@protoc --version | grep -qxF '$(GEN_PROTOC)' || \
	  { echo "make generate: the protobuf code is made by $(GEN_PROTOC) (apt-get install protobuf-compiler), not: $$(protoc --version)" >&2; exit 1; }
	$(GO) generate ./bpf/... ./proto/... ./bench/emptyprobe/

## generate-check: the committed generated code is what `make generate` makes from its sources (~15 s warm)
generate-check: generate
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then git status --short -- $(GENERATED); \
	  echo "generated code differs from its sources: run make generate and commit the result" >&2; exit 1; fi

## build: the plugin, the daemon and the lab tools
build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(PLUGIN_LDFLAGS)" -o $(BIN)/kubectl-isoobs ./cmd/kubectl-isoobs
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/isoobs-daemon ./cmd/isoobs-daemon
	$(GO) build -o $(BIN)/isoobs-lab ./testlab/cmd/isoobs-lab
	$(GO) build -o $(BIN)/dnsgen ./testlab/cmd/dnsgen

## image: the daemon's image index (linux/amd64, arm64) in dist/image, built without Docker (release/image)
.PHONY: image
image:
	$(GO) run ./release/cmd/isoobs-image -version $(VERSION) -commit $(COMMIT) -date $(BUILD_DATE) -repository $(IMAGE_REPO) -out dist/image

## release: kubectl-isoobs for linux, darwin (amd64, arm64) and windows/amd64 as tar.gz, checksums.txt and
## the krew manifest in dist/release, pinned to the image of `image` (VERSION=vX.Y.Z; ALLOW_DIRTY=1 for an uncommitted tree)
.PHONY: release release-preflight
release: release-preflight image
	$(GO) run ./release/cmd/isoobs-release -version $(VERSION) -commit $(COMMIT) -date $(BUILD_DATE) -image-digest-file dist/image/index-digest -image-repository $(IMAGE_REPO) -out dist/release $(if $(ALLOW_DIRTY),-allow-dirty)

# Fails before the image build when VERSION is not a release version or the tree is dirty.
release-preflight:
	@$(GO) run ./release/cmd/isoobs-release -preflight -version $(VERSION) -commit $(COMMIT) -date $(BUILD_DATE) $(if $(ALLOW_DIRTY),-allow-dirty)

## test: every test, on the real kernel and the real local control plane (root; a test that
## needs root fails without it: testlab/needroot)
test: deps lint generate-check
	@sh hack/build-otelcol.sh --check
	$(GO) test -count=1 -p 1 -timeout $(TEST_TIMEOUT) $(GOTESTFLAGS) ./...

## unit: the tests that need no root, lab, network or built tools: -short -race, any user
unit:
	$(GO) test -short -race -timeout 10m $(GOTESTFLAGS) ./...

## check: golangci-lint, pinned and built once by hack/golangci-lint.sh, with .golangci.yml
check:
	bash hack/golangci-lint.sh run ./...

## bench: benchmarks (probe cost, daemon, fan-out); results go to BENCHMARKS.md by hand
bench: deps
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -count=1 -timeout 60m ./...

## bench-probe-parts: what each part of the DNS probe costs per packet under load
bench-probe-parts: deps
	bash hack/probe-parts.sh

## bench-peers: the same DNS load through isoobs, Inspektor Gadget trace_dns, tcpdump and no observer, side by side (BENCHMARKS.md)
.PHONY: bench-peers
bench-peers: deps build
	bash hack/bench-peers.sh

## demo: plays the seed 000 DNS incident on the local lab, then cleans up (REAL_NODE=1: the daemon and the crawler as real containers on a real kubelet node, ~30-40 s more)
demo: deps build
	$(GO) run ./testlab/cmd/isoobs-demo $(if $(REAL_NODE),--real-node)

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## lab-up / lab-down: a lab in the background, for poking at it by hand
lab-up: deps
	$(GO) run ./testlab/cmd/isoobs-lab up

lab-down:
	$(GO) run ./testlab/cmd/isoobs-lab down

clean:
	rm -rf $(BIN)
