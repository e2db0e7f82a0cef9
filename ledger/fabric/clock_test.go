package fabric

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hyperledger/fabric-gateway/pkg/client"
	"github.com/hyperledger/fabric-protos-go-apiv2/common"
	"github.com/hyperledger/fabric-protos-go-apiv2/gateway"
	"github.com/hyperledger/fabric-protos-go-apiv2/peer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/chaincode/wire"
)

// TestSkewedClockRefused: on the test network, the peers refuse a transaction whose time
// is further from their clocks than the chaincode's tolerance, as ErrClock, and nothing
// is written: the same record anchors once the time is right. The Fabric Gateway client
// sets a proposal's time itself, so the test rewrites it and signs the proposal again.
func TestSkewedClockRefused(t *testing.T) {
	c, signer, cfg := networkClient(t, "clock-gw")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	body, err := ledger.CanonicalMarshal(ledger.DatasetSnapshot{Windows: []ledger.SignalWindow{{Signal: "plant/line/pump/vibration",
		From: audittest.T0, To: audittest.T0.Add(time.Hour), Rows: 3600}}, Rows: 3600, MetadataHash: audittest.Hash([]byte("clock"))})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := signer.Sign(ledger.Record{Header: ledger.Header{ID: ledger.NewID(), SchemaVersion: ledger.SchemaVersion,
		Type: ledger.TypeDatasetSnapshot, Time: time.Now().UTC(), Site: servicetest.UniqueName("clock")}, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := ledger.MarshalRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, skew := range []time.Duration{-10 * time.Minute, 10 * time.Minute} {
		_, err := skewed(t, c, cfg, skew, wire.FnAnchor, string(payload)).EndorseWithContext(ctx)
		if err == nil {
			t.Fatalf("a transaction %v off the peers' clocks was endorsed", skew)
		}
		if err := classify("endorse", err); !errors.Is(err, ErrClock) || ledger.IsPermanent(err) || !strings.Contains(err.Error(), "expected within 5m0s") {
			t.Fatalf("a transaction %v off the peers' clocks: %v; want ErrClock, expected within 5m0s", skew, err)
		}
	}
	if _, err := c.Get(ctx, rec.Header.ID); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("get after the refusals: %v; want not found", err)
	}
	if err := c.Anchor(ctx, rec); err != nil {
		t.Fatalf("the same record with the right time: %v", err)
	}
}

// skewed returns the proposal of fn(args) with its time moved by skew, signed with the
// client's key.
func skewed(t *testing.T, c *Client, cfg Config, skew time.Duration, fn string, args ...string) *client.Proposal {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	prop, err := c.contract.NewProposal(fn, client.WithArguments(args...))
	must(err)
	b, err := prop.Bytes()
	must(err)
	pt := &gateway.ProposedTransaction{}
	p := &peer.Proposal{}
	h := &common.Header{}
	ch := &common.ChannelHeader{}
	must(proto.Unmarshal(b, pt))
	must(proto.Unmarshal(pt.GetProposal().GetProposalBytes(), p))
	must(proto.Unmarshal(p.GetHeader(), h))
	must(proto.Unmarshal(h.GetChannelHeader(), ch))
	ch.Timestamp = timestamppb.New(ch.GetTimestamp().AsTime().Add(skew))
	h.ChannelHeader, err = proto.Marshal(ch)
	must(err)
	p.Header, err = proto.Marshal(h)
	must(err)
	pt.Proposal.ProposalBytes, err = proto.Marshal(p)
	must(err)
	b, err = proto.Marshal(pt)
	must(err)
	sign, err := signer(cfg) // the client's own key, as Dial loads it
	must(err)
	digest := sha256.Sum256(pt.GetProposal().GetProposalBytes())
	sig, err := sign(digest[:])
	must(err)
	out, err := c.gw.NewSignedProposal(b, sig)
	must(err)
	return out
}
