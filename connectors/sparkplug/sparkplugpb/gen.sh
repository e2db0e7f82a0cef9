#!/bin/sh
# Regenerates sparkplug_b.pb.go from sparkplug_b.proto. Tools (the versions the committed
# file was made with):
#   apt-get install -y protobuf-compiler                            # protoc 3.21.12 (Debian 12)
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
set -eu
cd "$(dirname "$0")"
PATH="$(go env GOPATH)/bin:$PATH"
protoc --go_out=. --go_opt=paths=source_relative sparkplug_b.proto
