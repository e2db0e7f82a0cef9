package federation_test

import (
	"context"
	"crypto/ed25519"
	"os"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// TestFederationOnSharedNATS runs two rounds of a hub and three gateways against the NATS
// server that `make test` starts (MILLWRIGHT_NATS_URL), in a federation of its own.
func TestFederationOnSharedNATS(t *testing.T) {
	servicetest.Require(t, "NATS with JetStream")
	url := os.Getenv("MILLWRIGHT_NATS_URL")
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	const n, dim, rounds = 3, 64, 2
	fed := servicetest.UniqueName("fed")
	dial := func() *natsbus.Bus {
		c := natsbus.ClientConfig{URL: url}
		c.SetDefaults()
		b, err := natsbus.Dial(context.Background(), c, discard)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	hubBus := dial()
	var members []string
	for i := range n {
		members = append(members, gwName(i))
	}
	ctx := context.Background()
	if err := hubBus.EnsureFederation(ctx, fed, members, time.Hour); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hubBus.DeleteFederation(context.Background(), fed) })
	fc := fedConfig(n, dim)
	fc.Name, fc.Rounds = fed, rounds
	h := startHub(t, hubBus, fc)
	for i := range n {
		p, err := federation.NewParticipant(federation.ParticipantConfig{Federation: fed, Name: gwName(i), HubKey: hubKey().Public().(ed25519.PublicKey)},
			dial(), gatewayKey(i), &pullTrainer{target: target(i, dim), samples: 10}, discard, nil)
		if err != nil {
			t.Fatal(err)
		}
		runParticipant(t, p)
	}
	for r := 1; r <= rounds; r++ {
		if rep := h.next(t); rep.Outcome != "aggregated" || len(rep.Used) != n {
			t.Fatalf("round %d: %+v", r, rep)
		}
	}
}
