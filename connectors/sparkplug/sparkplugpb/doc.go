// Package sparkplugpb holds the Sparkplug B protobuf payload types, generated from
// sparkplug_b.proto.
package sparkplugpb

//go:generate ./gen.sh
