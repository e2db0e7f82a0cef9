package natsbus

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millwright-io/millwright/federation"
)

// TestGetModelBoundsTheClaimedSize: a model object whose metadata claims far more bytes
// than any model can have (a compromised or malicious NATS server, or whoever can write
// the bucket) must be refused before the reader allocates what the metadata claims: a
// model is at most 4*MaxParams bytes of parameters plus a 1 MiB header. readChunks
// allocates the claimed size (up to 2 GiB) on the first short chunk; on a 32-bit
// appliance (armv7, 386) a claim of 1<<31 bytes panics in makeslice.
func TestGetModelBoundsTheClaimedSize(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	bucket := modelBucket("f1")
	if _, err := hub.obj(ctx, bucket); err != nil {
		t.Fatal(err)
	}
	hash := federation.HashHex([]byte("x"))
	const nuid = "FAKENUID0000000000000000"
	if _, err := hub.js.Publish(ctx, chunkSubject(bucket, nuid), []byte{1}); err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(jetstream.ObjectInfo{ObjectMeta: jetstream.ObjectMeta{Name: hash}, Bucket: bucket, NUID: nuid,
		Size: 1 << 31, Chunks: 2, Digest: "SHA-256=AAAA"})
	m := nats.NewMsg(metaSubject(bucket, hash))
	m.Data = meta
	if _, err := hub.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	a := dial(t, factory(srv, "a", "pa"))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := a.GetModel(ctx, "f1", hash)
	runtime.ReadMemStats(&after)
	const limit = 4*federation.MaxParams + 2<<20
	if n := after.TotalAlloc - before.TotalAlloc; n > limit {
		t.Errorf("GetModel of an object claiming 2 GiB allocated %d bytes (the largest model is about %d); err %v", n, limit, err)
	}
	if err == nil || !strings.Contains(err.Error(), "metadata says 2147483648 bytes; expected at most") {
		t.Errorf("GetModel of an object claiming 2 GiB: err %v; want it refused, naming the size and the limit", err)
	}
}
