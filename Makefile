# Postern — make targets. `make` runs lint and test.
GO      ?= go
BIN     := bin/postern
PKGS    := ./...
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.DEFAULT_GOAL := all
.PHONY: all build test lint demo bench fuzz tools clean

all: lint test

# cgo for pg_query (the real Postgres parser), linked statically: still one
# binary that needs no libc at run time.
build:
	CGO_ENABLED=1 $(GO) build -trimpath -tags netgo,osusergo \
	  -ldflags "-s -w -linkmode external -extldflags -static -X main.version=$(VERSION)" -o $(BIN) ./cmd/postern

# -race throughout; the slow soak (3-minute SVID rotation) runs here too.
# The tunnel conformance suite (GiB transfers on both transports) runs on
# its own after the rest, so that neither starves the other's timers.
TUNNEL_PKG := github.com/postern/postern/protocols/tunnel
test:
	$(GO) test -race -timeout 14m -count=1 $$($(GO) list $(PKGS) | grep -vx '$(TUNNEL_PKG)')
	$(GO) test -race -timeout 5m -count=1 ./protocols/tunnel

# Client tools the tests use that distributions do not package: grpcurl,
# built from the module proxy into bin/ (the gRPC tests look there).
GRPCURL_VERSION ?= v1.9.4
tools: bin/grpcurl
bin/grpcurl:
	@mkdir -p bin
	cd bin && GOFLAGS=-mod=mod GOBIN=$(CURDIR)/bin $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

demo: build
	./$(BIN) demo

# Whole-chain throughput (client → gateway → agent → sink) over QUIC and
# TLS+yamux against a direct connection, plus per-transport microbenchmarks.
bench:
	./scripts/bench.sh

# Every Fuzz target, briefly (FUZZTIME per target).
FUZZTIME ?= 10s
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

clean:
	rm -rf bin
