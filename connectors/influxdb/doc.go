// Package influxdb writes telemetry to InfluxDB through its v2 HTTP write API.
//
// It speaks to InfluxDB 2.x and to InfluxDB 1.8 (which serves the same /api/v2/write
// endpoint). On 1.8 the bucket is "database" or "database/retention-policy", the org is
// ignored, and the token is "user:password" when authentication is on. The v2 write endpoint
// of 1.8 does not create databases: create one with InfluxQL "CREATE DATABASE name" first.
//
// # Line-protocol layout
//
// Every point becomes one line:
//
//	<measurement>[,factory=<f>][,line=<l>],machine=<m>,signal=<s> <value field>,quality="<q>"[,status=<code>i][,server_time=<ns>i] <time>
//
// with
//
//   - measurement: the configured measurement (default "telemetry").
//   - tags, in sorted order: factory, line, machine, signal. An empty factory or line is
//     left out; machine and signal are required.
//   - the value field is named after the value's kind, so that a signal that changes type
//     never causes a field type conflict: a float is value=<float> (the shortest form that
//     reads back exactly: 5, 0.1, 1e+06), an int value_int=<n>i, a bool
//     value_bool=true|false, a string value_str="<s>".
//   - quality="good"|"uncertain"|"bad", always.
//   - status=<code>i, the protocol's raw status code (an OPC-UA StatusCode), only when it is
//     not 0.
//   - server_time=<ns>i, the server timestamp, only when the point has both a source and a
//     server timestamp (the line's own time is then the source time).
//   - time: the source time when known, else the server time, in nanoseconds (precision=ns).
//
// Escaping follows the line-protocol specification: commas and spaces in the measurement,
// commas, equals signs and spaces in tag values are preceded by a backslash; double quotes
// and backslashes in string fields are preceded by a backslash. A string field may hold
// line breaks: InfluxDB's parser keeps them inside the quotes.
//
// # Points that can never be stored
//
// The encoder refuses, before anything is sent, points InfluxDB would refuse or mangle:
// NaN and infinite floats, a zero timestamp or one outside InfluxDB's range, a missing
// machine or signal, names (factory, line, machine, signal) that are not valid UTF-8, hold a
// line break, end in a backslash or hold a backslash right before a comma, equals sign or
// space (line protocol cannot represent those), and series keys longer than InfluxDB's
// 65,535 bytes. They are returned to the pipeline as connectors.Rejection values and
// dead-lettered there.
//
// # Writes and errors
//
// Write shards a batch by series (Point.SeriesHash modulo Writers) so that each series' points
// stay in order, writes the shards concurrently, and each shard in requests of at most
// BatchPoints points. Its errors tell the pipeline what to do:
//
//   - nil: every point is stored.
//   - *connectors.RejectedError: the listed points were refused for good (by the encoder, or by
//     the server: a field type conflict, a point outside the retention policy, a line it
//     could not parse) and every other point is stored. A request the server answers with
//     400 or 422 is bisected until exactly the refused points are known; a 413 (request too
//     large) is split in halves and retried.
//   - *WriteError: the batch was not (entirely) stored and is to be retried as a whole, which is
//     safe because rewriting a point is idempotent in InfluxDB. Its RetryAfter method returns
//     the server's Retry-After (429, 503), or 0; the pipeline waits that long (up to an hour)
//     before it retries. Connection failures (refused, reset) and a server certificate the
//     configured CA does not verify also wrap connectors.ErrNotConnected: the pipeline then
//     closes the sink and connects it again, and Connect reads the TLS files again, so a
//     rotated CA is picked up without a restart. 401, 403 and 404 say what to check (the
//     token, that the bucket or database exists).
package influxdb
