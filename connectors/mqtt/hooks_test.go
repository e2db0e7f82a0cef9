package mqtt

import (
	"testing"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

// sizeHandler records the sizes of the payloads it is given.
type sizeHandler struct{ sizes []int }

func (h *sizeHandler) Decode(_ string, payload []byte, _ int64, dst []telemetry.Point) ([]telemetry.Point, error) {
	h.sizes = append(h.sizes, len(payload))
	return dst, nil
}

// max_payload_bytes bounds the payloads a hooks handler (the Sparkplug host) parses, as it
// bounds those of the JSON decoder: a larger one is dead-lettered, not handed over.
func TestHandlerIsNotGivenPayloadsOverMaxPayloadBytes(t *testing.T) {
	h := &sizeHandler{}
	env := testEnv(t)
	src, err := NewWithHooks("test", Config{Servers: []string{"tcp://127.0.0.1:1"}, MaxPayloadBytes: 1024}, env,
		Hooks{Filters: map[string]byte{"spBv1.0/#": 1}, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	decs, err := src.newDecoders()
	if err != nil {
		t.Fatal(err)
	}
	c := newConnection(src, 1)
	src.conn = c
	r := &receiver{c: c, decs: decs}
	acks := &ackLog{}
	r.onMessage(&fakeClient{}, &fakeMsg{topic: "spBv1.0/g/NBIRTH/n", payload: make([]byte, 64<<10), id: 1, acks: acks})
	r.onMessage(&fakeClient{}, &fakeMsg{topic: "spBv1.0/g/NBIRTH/n", payload: make([]byte, 1024), id: 2, acks: acks})

	if len(h.sizes) != 1 || h.sizes[0] != 1024 {
		t.Errorf("handler was given payloads of %v bytes with max_payload_bytes 1024; want only the 1024-byte one", h.sizes)
	}
	dls := env.DeadLetters.(*deadLetters).all()
	if len(dls) != 1 || dls[0].Class != ClassPayloadTooLarge || dls[0].Origin != "spBv1.0/g/NBIRTH/n" {
		t.Errorf("dead letters = %v; want one of class %s from spBv1.0/g/NBIRTH/n", dls, ClassPayloadTooLarge)
	}
}
