// Package train trains a machine's anomaly model on the gateway from its own history in the local InfluxDB.
//
// A training reads one machine's samples through narrow Flux queries (one machine, one
// time chunk per query, each bounded by a timeout), aligns them on a time grid with
// models/features, fits the configured detector on the older part and validates it on the
// newer, held-out part, and writes the artifact with models/store. A Trainer runs one
// training at a time (scheduled, by hand or continuing a federation's model: the others
// wait), on an OS thread lowered in priority (see lowerPriority), so it uses at most one
// core and yields to ingest. A new model replaces the current one only if it validates
// at least as well (see Better). Every training is attested through ledger.Recorder.
package train
