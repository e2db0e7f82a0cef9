// Package opcua is the source that reads the variables of an OPC-UA server into points.
//
// # API (for code in this package and the gateway)
//
//	New(name string, cfg Config, env connectors.Env) (*Source, error) // no I/O
//	(*Source).Connect(ctx) / Read(ctx) / Close(ctx)                   // connectors.Source
//	(*Source).Items() []ItemStatus                                     // per-item state and errors
//	(*Source).PKIDir() string                                          // certificate and trust list
//	Config, DefaultXxx constants, SampleConfig (sample.yaml)
//
// Config.StateDir must be set (the gateway fills it from gateway.state_dir) unless pki.dir
// or pki.cert_file is given.
//
// # Connecting and security
//
// Connect asks the endpoint for its endpoints (GetEndpoints) and picks the one with the
// configured security policy and mode that accepts the configured user authentication
// (anonymous, username/password, or an X.509 user certificate). A password is never sent
// in clear text: a UserName token policy whose security policy is None is used only on a
// SignAndEncrypt channel (Part 4, 7.41.4). When none fits, the error lists every
// policy/mode and authentication the server offers.
//
// The client's application certificate and key are created on the first Connect in
// <pki.dir>/own/ (RSA 2048, the key in PKCS#1 PEM, the application URI in the certificate's
// URI SAN) and reused afterwards; a certificate naming another application URI is
// replaced. With a policy other than None the server's certificate, as its endpoint
// description gives it, must be in <pki.dir>/trusted/ (byte for byte, PEM or DER) and be
// within its validity period; otherwise it is written to <pki.dir>/rejected/, the reason is
// logged, millwright_opcua_certificates_rejected_total counts it and Connect fails (the
// pipeline retries, so moving the file to trusted/ takes effect on the next attempt). With
// pki.trust_on_first_use the first certificate seen while trusted/ is empty is pinned there
// with a warning; a different one later is rejected. With policy None nothing is verified
// or encrypted and the trust list is not consulted.
//
// # Items
//
// Items come from nodes entries (a node id, or a browse path from the Objects folder
// resolved on every Connect) and from browse roots: every variable below a root (objects
// are entered down to max_depth levels, standard namespace-0 nodes and properties are
// skipped) whose browse path below the root matches an include glob and no exclude glob,
// up to max_items per root (the rest are counted in millwright_opcua_dropped_total
// {reason="browse_limit"} and logged). A Browse answered with a bad status fails the
// browse (a rebrowse then keeps the current items); a root the server does not know is an
// item error. A node named twice is one item (the first entry
// wins). Discovery runs on every Connect and, with rebrowse_interval, on that schedule:
// new variables are added and vanished ones removed, without duplicating any monitored
// item.
//
// An item that fails (a node id the server does not know, a browse path that names
// nothing, a path no mapping rule names, a monitored item the server refuses) is logged
// once, counted in millwright_opcua_item_errors_total{class} and listed by Items with its
// error; the other items keep working.
//
// # Names
//
// An item's path is its browse path ("Plant/Line1/Press7/Temperature") or, for a node_id
// entry, its node id. Fixed names in a nodes entry win; then the first mapping rule whose
// regular expression matches the path gives the names from its named groups (factory,
// line, machine, signal) and templates ("$machine", "${1}"); without a matching rule the
// signal is the path's last segment and the machine the one before. Points without a
// factory get the gateway's.
//
// # Values
//
// Every numeric type becomes an int value (uint64 above MaxInt64: a float) or a float
// value (Float, Double); Boolean a bool, String and LocalizedText a string. Arrays are
// flattened into signal[0], signal[1], ... (a multi-dimensional one into signal[i][j]...;
// at most max_array_elements, the rest counted) or skipped (counted), by the arrays
// setting; an empty array is counted as a value-less sample. Other types (DateTime, ByteString,
// structures) and empty values are counted in millwright_opcua_dropped_total and skipped.
// The StatusCode becomes the quality: Good, Uncertain or Bad by its severity bits, with
// the raw code kept in Quality.Code. SourceTime is the source timestamp and ServerTime the
// server timestamp (the receive time when the server sends none). A status with the
// Overflow info bit (the server's item queue dropped samples) is counted in
// millwright_opcua_server_queue_overflows_total.
//
// # Delivery, backpressure and the at-most-once boundary
//
// In subscription mode the server sends the changes of monitored items; in polling mode
// the source reads every item each interval, max_nodes_per_read per request (a cycle that
// cannot start on time is skipped and counted). Read returns at most max_batch_points
// points and takes nothing more while max_inflight_points are unsettled. The client
// library hands publish responses over a channel of notification_queue entries; when Read
// takes none, that channel fills and the library stops sending publish requests, so the
// server keeps the samples in its own queues (queue_size per item, discard_oldest), and
// what it drops there shows as overflows. Memory stays bounded by the window, the
// channel and one publish response.
//
// OPC-UA acknowledges a publish response when the next publish request is sent, and a
// new session cannot ask for old values again: delivery is at most once. Points of a
// batch the pipeline could not store, and points received but not yet read when a
// connection is closed, are counted in millwright_opcua_lost_points_total.
//
// # Connection loss
//
// The source checks the session every keep_alive by reading the server's state; a failed
// check, a closed channel, an ended subscription or one silent for stall_timeout (the
// publish watchdog of watchdog.go, with the server's clock as its heartbeat) makes the next
// Read return connectors.ErrNotConnected. The pipeline then calls Close (which deletes the
// subscription and closes the session) and Connect with backoff. Connect creates a new
// session, resolves and browses again and re-creates the subscription with exactly the
// current items (the library's automatic reconnect and subscription transfer are off), so
// no monitored item is duplicated.
//
// OPC-UA events (alarms and conditions) are not read.
package opcua
