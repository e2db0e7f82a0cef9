// Package mqtt is the source that turns the JSON messages of MQTT topics into points.
//
// # Topics
//
// Each configured topic is an MQTT filter in which a whole level may be a named capture:
// "plant/{line}/{machine}/telemetry" subscribes to "plant/+/+/telemetry" and takes the line
// and the machine of every point from the topic name. The captures are {factory}, {line},
// {machine} and {signal}; what a pattern does not capture may be fixed in the topic's
// configuration (factory, line, machine, signal). Every point needs a machine (captured or
// fixed) and a signal (captured, fixed or named by the payload). When the topic gives a
// signal and the payload names signals too, the topic's is a prefix: with signal "motor",
// {"current": 3.2} is signal "motor.current". Points without a factory get the gateway's.
//
// # Payloads
//
// Payloads are JSON. JSON numbers become float values, true and false bool values, strings
// string values; null values are skipped. The field names below are the defaults (see
// Payload). Four shapes are accepted:
//
//  1. A bare scalar, for a topic that gives the signal; its time is the receive time:
//
//     21.5
//
//  2. A single sample: an object with the value field, and optionally a timestamp, a quality
//     and the signal's name (needed when the topic gives none). Other keys, such as units,
//     are ignored; a value that is an object or an array is an error:
//
//     {"value": 21.5, "ts": 1700000000123, "quality": "good"}
//     {"signal": "temp", "value": 21.5, "ts": 1700000000123}
//
//  3. An object of signals: every key except the timestamp and quality fields is a signal,
//     and nested objects are flattened with the separator; arrays are an error:
//
//     {"ts": 1700000000123, "temp": 21.5, "rpm": 1500, "motor": {"current": 3.2}}
//
//     gives signals temp, rpm and motor.current, all at the same time and quality.
//
//  4. An array of samples of shapes 2 or 3:
//
//     [{"ts": 1700000000123, "temp": 21.5}, {"ts": 1700000000223, "temp": 21.7}]
//
// Every point's ServerTime is the gateway's receive time; its SourceTime is the payload's
// timestamp (0 when there is none). Timestamps are Unix seconds (fractions allowed),
// milliseconds (the default), microseconds or nanoseconds, as JSON numbers or strings of
// digits, or strings in RFC 3339 or a Go time layout. A quality is "good", "uncertain" or
// "bad" (any of those three casings), or a raw numeric code: 0 is good and any other code is
// bad, with the code kept in Quality.Code. A missing or null quality is good.
//
// A message is accepted or refused as a whole. A refused message (too large, not JSON, a
// value of the wrong type, a bad timestamp, no signal name, ...) goes to the dead letters
// with its class, a reason that names the field, the value and what was expected, the topic
// and the first KiB of the payload. It is acknowledged like any other message, so one bad
// message cannot block a queue.
//
// # Delivery and acknowledgement
//
// The source keeps a persistent session (clean_session false) by default, so the broker
// queues QoS 1 and 2 messages while the gateway is away. Messages are acknowledged to the
// broker (PUBACK, or PUBREC for QoS 2) only when the pipeline has stored the batch that holds
// them, and always in the order they were received, as MQTT 3.1.1 requires. When the pipeline
// reports that a batch was not stored, nothing more is acknowledged on that connection and
// the next Read returns connectors.ErrNotConnected: the pipeline reconnects and the broker
// delivers every unacknowledged message again. At-least-once delivery means a message can
// arrive twice (its points are the same, so a sink that writes idempotently stores them
// once). QoS 0 messages are never redelivered: those received but not yet stored when a
// connection ends are lost, as QoS 0 allows.
//
// Close first waits (up to two seconds) for the broker to confirm that it has read every
// acknowledgement sent, so that a quick reconnect does not overtake them: a broker that sees
// the same client id connect again drops the old connection with whatever it has not read,
// and would deliver those messages again.
//
// At most max_inflight messages are held between receipt and acknowledgement. At that bound
// the source stops reading from the connection and the broker keeps the rest (up to its own
// queue limits, such as Mosquitto's max_queued_messages, and its in-flight window, such as
// max_inflight_messages): that is the backpressure. While the source reads nothing, paho
// reads no keep-alive answer either, so a pipeline that settles nothing for longer than
// keep_alive plus the ping timeout (at most 10s) makes the connection drop; the source then
// reconnects and the broker delivers the unacknowledged messages again, nothing is lost. For
// the same reason a connection lost while the window is full is noticed only then.
//
// Every Connect subscribes again, also when the broker kept the session, so that topics
// added to the configuration take effect; MQTT then sends the topics' retained messages
// again (a retained bare value, which has no timestamp, is stored again at the new receive
// time). A broker that holds queued messages may send them before it answers the
// subscription; when they fill the window, Connect does not wait for the answer and the next
// Read checks it.
//
// With connections > 1 the source opens several clients on one shared subscription
// ($share/<share_group>/<filter>) and the broker spreads the messages across them; message
// order then holds per connection only.
//
// The source does not reconnect by itself: when a connection is lost, Read returns an error
// wrapping connectors.ErrNotConnected and the pipeline calls Close and Connect with backoff.
package mqtt
