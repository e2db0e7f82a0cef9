package natsbus

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/gateway/config"
)

// benchEnv is an embedded server with n factories in federation f1, the hub's connection
// and one connection per factory.
func benchEnv(b *testing.B, n int) (*Bus, []*Bus) {
	b.Helper()
	cfg := ServerConfig{Listen: freeAddr(b), StoreDir: b.TempDir()}
	for i := range n {
		name := fmt.Sprintf("g%d", i)
		cfg.Factories = append(cfg.Factories, Factory{Name: name, Password: config.NewSecret("pw-" + name), Federations: []string{"f1"}})
	}
	srv, hub := serve(b, cfg, slog.New(slog.DiscardHandler))
	gws := make([]*Bus, n)
	for i, f := range cfg.Factories {
		gws[i] = dial(b, ClientConfig{URL: srv.ClientURL(), User: f.Name, Password: f.Password, Timeout: 10 * time.Second})
	}
	return hub, gws
}

// BenchmarkTransfer measures the transport operations of a round of 10 gateways and a
// model of 100k float32 parameters (400 kB) on loopback: every gateway downloading the
// model at once, every gateway publishing an update of the same size at once (stored and
// acknowledged), and the hub reading the ten updates.
func BenchmarkTransfer(b *testing.B) {
	const n, size = 10, 400_000
	ctx := context.Background()
	hub, gws := benchEnv(b, n)
	model := make([]byte, size)
	for i := range model {
		model[i] = byte(i * 7)
	}
	h := federation.HashHex(model)
	if err := hub.PutModel(ctx, "f1", h, model); err != nil {
		b.Fatal(err)
	}
	b.Run("get-model-x10", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(n * size)
		for range b.N {
			var wg sync.WaitGroup
			for _, g := range gws {
				wg.Go(func() {
					if got, err := g.GetModel(ctx, "f1", h); err != nil || len(got) != size {
						b.Error(len(got), err)
					}
				})
			}
			wg.Wait()
		}
	})
	round := uint64(0)
	b.Run("publish-x10+read", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(2 * n * size)
		for range b.N {
			round++
			var wg sync.WaitGroup
			for i, g := range gws {
				wg.Go(func() {
					if err := g.PublishUpdate(ctx, "f1", round, fmt.Sprintf("g%d", i), model); err != nil {
						b.Error(err)
					}
				})
			}
			got := 0
			cctx, cancel := context.WithCancel(ctx)
			_ = hub.Updates(cctx, "f1", round, func(federation.UpdateMessage) {
				if got++; got == n {
					cancel()
				}
			})
			cancel()
			wg.Wait()
		}
	})
	b.Run("put-model", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(size)
		for i := range b.N {
			model[0], model[1] = byte(i), byte(i>>8)
			if err := hub.PutModel(ctx, "f1", federation.HashHex(model), model); err != nil { // the caller hashes
				b.Fatal(err)
			}
		}
	})
}
