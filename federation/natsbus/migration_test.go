package natsbus

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
)

// TestFailedStartLeavesAPreAccountsStoreWhereItWas: a hub from before accounts whose first
// start on this version fails (here: a TLS certificate that cannot be loaded, found only
// after the store was moved) has moved its streams out of the global account anyway. The
// previous version, which an operator falls back to, then finds no federations in its
// store and starts them afresh; the next start of this version finds the hub's account
// already there and leaves what the previous version wrote in the global account, without
// a word.
func TestFailedStartLeavesAPreAccountsStoreWhereItWas(t *testing.T) {
	store := t.TempDir()
	preAccounts(t, store, func(hub *Bus) []error {
		return []error{hub.EnsureFederation(context.Background(), "f1", []string{"a"}, time.Hour),
			hub.PutRound(context.Background(), "f1", []byte(`{"round":3}`))}
	})

	cfg := ServerConfig{Listen: freeAddr(t), StoreDir: store, CertFile: filepath.Join(store, "missing.pem"), KeyFile: filepath.Join(store, "missing.key"),
		Factories: []Factory{{Name: "a", Password: config.NewSecret("pa"), Federations: []string{"f1"}}}}
	cfg.SetDefaults()
	if srv, err := StartServer(cfg, slog.New(slog.DiscardHandler)); err == nil {
		srv.Shutdown()
		t.Fatal("the server started without its certificate")
	}
	if _, err := os.Stat(filepath.Join(store, "jetstream", globalAccount)); err != nil {
		t.Errorf("a start that failed moved the pre-accounts store: %v (the previous version now finds no federations)", err)
	}
}
