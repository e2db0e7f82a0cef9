package sparkplug

import (
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/millwright-io/millwright/connectors/sparkplug/sparkplugpb"
)

// Sparkplug B message types, the third level of a topic.
const (
	NBirth = "NBIRTH"
	NData  = "NDATA"
	NDeath = "NDEATH"
	NCmd   = "NCMD"
	DBirth = "DBIRTH"
	DData  = "DDATA"
	DDeath = "DDEATH"
	DCmd   = "DCMD"
)

// RebirthMetric is the name of the NCMD metric that asks an edge node for its births.
const RebirthMetric = rebirthMetric

// BdSeqMetric is the name of the birth/death sequence metric of NBIRTH and NDEATH.
const BdSeqMetric = bdSeqMetric

// Topic returns spBv1.0/<group>/<msgType>/<edgeNode>, or .../<device> when device is set.
func Topic(group, msgType, edgeNode, device string) string {
	t := namespace + "/" + group + "/" + msgType + "/" + edgeNode
	if device != "" {
		t += "/" + device
	}
	return t
}

// StateTopic returns the topic of a host application's STATE messages.
func StateTopic(hostID string) string { return namespace + "/" + stateGroup + "/" + hostID }

// StatePayload returns the JSON body of a STATE message, as Sparkplug 3.0 defines it:
// {"online":true,"timestamp":<Unix ms>}.
func StatePayload(online bool, timestampMS int64) []byte {
	b := append([]byte(`{"online":`), strconv.FormatBool(online)...)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, timestampMS, 10)
	return append(b, '}')
}

// RebirthRequest returns the payload of an NCMD that asks an edge node to publish its
// births again: the Boolean metric Node Control/Rebirth set to true.
func RebirthRequest(now time.Time) []byte {
	ms := uint64(now.UnixMilli())
	b, err := proto.Marshal(&sparkplugpb.Payload{
		Timestamp: proto.Uint64(ms),
		Metrics: []*sparkplugpb.Payload_Metric{{
			Name:      proto.String(rebirthMetric),
			Timestamp: proto.Uint64(ms),
			Datatype:  proto.Uint32(uint32(sparkplugpb.DataType_Boolean)),
			Value:     &sparkplugpb.Payload_Metric_BooleanValue{BooleanValue: true},
		}},
	})
	if err != nil {
		panic("sparkplug: marshal a rebirth request: " + err.Error()) // a fixed, valid message
	}
	return b
}

// IsRebirthRequest reports whether an NCMD payload asks for a rebirth.
func IsRebirthRequest(payload []byte) bool {
	var p Payload
	if p.Unmarshal(payload) != nil {
		return false
	}
	var m Metric
	for {
		ok, err := p.NextMetric(&m)
		if !ok || err != nil {
			return false
		}
		if string(m.Name) == rebirthMetric && m.Value == fieldMetricBoolean && m.Bits != 0 {
			return true
		}
	}
}
