// Package sparkplug is the source that reads a Sparkplug B 3.0 namespace as a host application.
//
// # Session
//
// The source is built on the MQTT source (connectors/mqtt) with one connection and a clean
// session. It connects with its offline STATE as the MQTT will (spBv1.0/STATE/<host_id>,
// {"online":false,"timestamp":T}, QoS 1, retained), subscribes to spBv1.0/<group>/# for
// each configured group (spBv1.0/# without groups), then publishes its online STATE with the
// same timestamp T. It also subscribes to its own STATE topic: when the broker delivers an
// offline STATE of this host (the will of an earlier connection, published late), it
// publishes its online STATE again. Close publishes the offline STATE before it disconnects.
//
// # Births, data and deaths
//
// NBIRTH and DBIRTH define the metrics of an edge node and of its devices: name, alias and
// datatype. An NBIRTH forgets the node's devices (they are born again after it) and records
// the node's bdSeq. NDATA and DDATA name their metrics by alias (or by name); every metric
// becomes a point whose time is the metric's timestamp, or else the payload's (Unix ms), and
// whose server time is the receive time. The births' own values are points too. A metric's
// property "Quality" (0 BAD, 192 GOOD, 500 STALE) sets the point's quality: good for GOOD,
// bad for BAD and STALE, uncertain for any other code, with the code kept. A transient
// metric (is_transient, in its birth or its message) is not for a historian: it gives no
// point. A historical one (is_historical) is stored at its time but is not the metric's
// current value.
//
// Sequence numbers (0 to 255, then 0 again) are checked per edge node on every message after
// the NBIRTH. A gap, data or a DBIRTH from a node or device that has no birth, or an alias
// the birth did not define, makes the source ask the node for its births again: an NCMD to
// spBv1.0/<group>/NCMD/<edge node> with the Boolean metric Node Control/Rebirth = true, at
// most once per rebirth_interval per node. The data of a message with a gap is still used;
// data without a birth is counted and dropped. An alias unknown to a birth that exceeded
// max_metrics_per_node is taken for one the host refused: it is counted as table_full and
// asks for no rebirth, which would be refused the same way.
//
// NDEATH (whose bdSeq must be that of the current NBIRTH; an older one is counted and
// ignored) and DDEATH mark the metrics of the node and its devices, or of the device, stale:
// each gives a point with the last current value and quality bad (code 500, STALE), and the
// metrics stay so until a new birth, since data without a birth is dropped. An NDEATH is the
// will the node registered when it connected, so its timestamp is not the death's
// (Sparkplug 3.0 §5): its points take the receive time, or the node's last data if later.
// A DDEATH's points take its timestamp.
//
// When the connection to the broker ends (Close, which the pipeline calls after a loss),
// every edge node becomes unborn as at its death: the points of the nodes that were born are
// stamped with that time and returned by the next Read, before anything of the next
// connection, and the node tables are forgotten, since the nodes may have been born again
// with other aliases meanwhile. Their next messages ask for their births.
//
// # Values
//
// The integer types become Int values (a UInt64 above the int64 range a Float), DateTime its
// Unix milliseconds as an Int, Float and Double Float values, Boolean Bool values, String,
// Text and UUID String values. Null metrics, and metrics of the other types (data sets,
// templates, bytes, files, property sets, arrays), give no point and are counted by reason
// in millwright_sparkplug_metrics_skipped_total.
//
// # Names
//
// By default a point's machine is the device id (the edge node id for the node's own
// metrics), its signal is the metric name with "/" replaced by the separator, and its line
// is the group id. Rules in the configuration map group, edge node, device and metric name
// by regular expressions and templates; they are applied once per metric, at its birth.
//
// # Delivery
//
// Messages are acknowledged to the broker once the pipeline has stored their points, within
// the MQTT source's bounded in-flight window. Sparkplug edge nodes publish data with QoS 0,
// so what the broker delivers while the gateway is away is lost; the births the gateway asks
// for after it reconnects restore the current values. The host's state (births, aliases,
// sequence numbers) follows the messages as they arrive, not as they are stored.
//
// Every table is bounded (max_nodes, max_devices_per_node, max_metrics_per_node); what
// does not fit is counted, not stored. An edge node that is not born (never, or dead) does
// not hold its place: a birth takes the place of the one longest unborn, and data of an
// unknown node does once that one's rebirth request is older than rebirth_interval. The
// stale points of a lost connection wait for at most max_nodes nodes. Payloads larger than
// mqtt.max_payload_bytes are dead-lettered unread.
package sparkplug
