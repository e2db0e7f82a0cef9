package chaincode

import (
	"sort"
	"strings"
	"time"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"github.com/hyperledger/fabric-protos-go-apiv2/ledger/queryresult"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeStub is an in-memory Stub: a key-value map whose writes apply at once (one
// transaction after another), a per-key write history, and the last event set.
type fakeStub struct {
	state   map[string][]byte
	history map[string][][]byte
	events  []string // event names, one per SetEvent
	payload [][]byte
	txID    string
	txTime  time.Time // the transaction's time; zero is now
}

func newFakeStub() *fakeStub {
	return &fakeStub{state: map[string][]byte{}, history: map[string][][]byte{}}
}

func (f *fakeStub) GetTxTimestamp() (*timestamppb.Timestamp, error) {
	if f.txTime.IsZero() {
		return timestamppb.Now(), nil
	}
	return timestamppb.New(f.txTime), nil
}

func (f *fakeStub) GetState(key string) ([]byte, error) { return f.state[key], nil }

func (f *fakeStub) PutState(key string, value []byte) error {
	f.state[key] = append([]byte(nil), value...)
	f.history[key] = append(f.history[key], f.state[key])
	return nil
}

func (f *fakeStub) SetEvent(name string, payload []byte) error {
	f.events = append(f.events, name)
	f.payload = append(f.payload, payload)
	return nil
}

func (f *fakeStub) GetStateByRange(start, end string) (shim.StateQueryIteratorInterface, error) {
	var kvs []*queryresult.KV
	for k, v := range f.state {
		if k >= start && k < end {
			kvs = append(kvs, &queryresult.KV{Key: k, Value: v})
		}
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].Key < kvs[j].Key })
	return &kvIter{kvs: kvs}, nil
}

func (f *fakeStub) GetHistoryForKey(key string) (shim.HistoryQueryIteratorInterface, error) {
	var ms []*queryresult.KeyModification
	for i, v := range f.history[key] {
		ms = append(ms, &queryresult.KeyModification{TxId: strings.Repeat("t", i+1), Value: v})
	}
	return &historyIter{ms: ms}, nil
}

type kvIter struct{ kvs []*queryresult.KV }

func (it *kvIter) HasNext() bool { return len(it.kvs) > 0 }
func (it *kvIter) Close() error  { return nil }
func (it *kvIter) Next() (*queryresult.KV, error) {
	kv := it.kvs[0]
	it.kvs = it.kvs[1:]
	return kv, nil
}

type historyIter struct {
	ms []*queryresult.KeyModification
}

func (it *historyIter) HasNext() bool { return len(it.ms) > 0 }
func (it *historyIter) Close() error  { return nil }
func (it *historyIter) Next() (*queryresult.KeyModification, error) {
	m := it.ms[0]
	it.ms = it.ms[1:]
	return m, nil
}
