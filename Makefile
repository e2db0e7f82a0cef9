# Millwright: the two commands a new user needs are `make demo` and `make test`.
SHELL := /usr/bin/env bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
SERVICES_ENV := .services/env
FABRIC_ENV := .fabric/env
# Integration and end-to-end tests share the real services, so packages run one at a time.
TEST_FLAGS ?= -race -count=1 -timeout 25m -p 1

.PHONY: all build test unit vet fmt-check services services-down services-status fabric-up fabric-down fabric-status demo bench bench-e2e bench-opcua fuzz clean

all: build

build: ## the one binary, pure Go
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/millwright ./gateway/cmd/millwright

services: ## install what is missing and start Mosquitto, InfluxDB, NATS and node-opcua on 127.0.0.1
	deploy/services.sh up

services-down: ## stop exactly the services `make services` started
	deploy/services.sh down

services-status:
	deploy/services.sh status

fabric-up: ## build (or reuse) Fabric v3.1.1 and start a fresh lineage network on 127.0.0.1 (.fabric/)
	deploy/fabric/network.sh up

fabric-down: ## stop exactly the Fabric processes fabric-up started and remove .fabric/
	deploy/fabric/network.sh down

fabric-status:
	deploy/fabric/network.sh status

vet: ## go vet, here and for the appliances' arm64 and armv7 (32-bit int: constants and counts that overflow it)
	$(GO) vet ./...
	GOARCH=arm64 CGO_ENABLED=0 $(GO) vet ./...
	GOARCH=arm GOARM=7 CGO_ENABLED=0 $(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

unit: ## tests that need no services
	$(GO) test $(TEST_FLAGS) ./...

# test: start the services and the Fabric network, vet, run every test against them, and always stop them again.
test:
	@set -euo pipefail; \
	deploy/services.sh up; \
	trap 'deploy/fabric/network.sh down || true; deploy/services.sh down' EXIT; \
	deploy/fabric/network.sh up; \
	$(MAKE) --no-print-directory fmt-check vet; \
	source $(SERVICES_ENV); \
	source $(FABRIC_ENV); \
	$(GO) test $(TEST_FLAGS) ./...

demo: build services ## the whole system in ~40 s: plant (MQTT, OPC-UA, Sparkplug) -> gateway -> InfluxDB -> models -> alarm -> lineage
	@source $(SERVICES_ENV); bin/millwright demo --mqtt "$$MILLWRIGHT_MQTT_URL" --influx "$$MILLWRIGHT_INFLUX_URL" --db "$$MILLWRIGHT_INFLUX_DB"

bench: ## hot-path micro-benchmarks (ns/op, allocs/op)
	$(GO) test -run '^$$' -bench . -benchmem ./gateway/... ./connectors/...

bench-e2e: build services ## whole system: broker -> gateway -> InfluxDB vs a bare multi-writer client
	@source $(SERVICES_ENV); $(GO) run ./bench -gateway bin/millwright

bench-opcua: services ## node-opcua -> OPC-UA source -> pipeline: 10,000 items at 100 ms, 50,000 at 1 s
	@source $(SERVICES_ENV); $(GO) run ./bench/opcua -items 10000 -interval 100ms && \
	  $(GO) run ./bench/opcua -items 50000 -interval 1s

fuzz: ## a short run of every fuzz target
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$pkg; \
	  done; done

clean:
	rm -rf bin
