package mqtt

import "github.com/eclipse/paho.mqtt.golang/packets"

// discardStore is the paho store of every client of the source: it keeps nothing. paho's
// store exists to resume a client's in-flight packets after it reconnects, but the source
// never reconnects a client (each Connect builds new ones, so a store would start empty
// anyway) and the broker's persistent session is what redelivers unacknowledged messages.
// paho's default in-memory store costs two map operations and a formatted key per message.
type discardStore struct{}

func (discardStore) Open()                             {}
func (discardStore) Put(string, packets.ControlPacket) {}
func (discardStore) Get(string) packets.ControlPacket  { return nil }
func (discardStore) All() []string                     { return nil }
func (discardStore) Del(string)                        {}
func (discardStore) Close()                            {}
func (discardStore) Reset()                            {}
