package natsbus

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
)

// TestOnLinkReportsLossAndReconnect: a connection with OnLink hears false when its server
// goes away and true when a server is back on the same address, and works again then.
func TestOnLinkReportsLossAndReconnect(t *testing.T) {
	cfg := ServerConfig{Listen: freeAddr(t), StoreDir: t.TempDir(), Factories: []Factory{
		{Name: "a", Password: config.NewSecret("pa"), Federations: []string{"f1"}},
	}}
	srv, _ := serve(t, cfg, slog.New(slog.DiscardHandler))
	links := make(chan bool, 16)
	cc := factory(srv, "a", "pa")
	cc.OnLink = func(up bool) { links <- up }
	a := dial(t, cc)
	want := func(up bool) {
		t.Helper()
		select {
		case got := <-links:
			if got != up {
				t.Fatalf("OnLink(%v), want OnLink(%v)", got, up)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no OnLink(%v) within 30s", up)
		}
	}
	srv.Shutdown()
	want(false)
	srv2, hub := serve(t, cfg, slog.New(slog.DiscardHandler))
	if srv2.ClientURL() != srv.ClientURL() {
		t.Fatalf("restarted server at %s, was %s", srv2.ClientURL(), srv.ClientURL())
	}
	want(true)
	ctx := context.Background()
	if err := hub.PutRound(ctx, "f1", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got, err := a.GetRound(ctx, "f1"); err != nil || string(got) != "after" {
		t.Fatalf("after the reconnect: round %q, %v", got, err)
	}
	select {
	case up := <-links:
		t.Errorf("extra OnLink(%v)", up)
	default:
	}
}
