// Package ledger records signed, hash-chained lineage records of models and hands them to a ledger backend through a durable outbox.
//
// # Threat model
//
// What is trusted: the private key of each actor (a gateway's identity key in its state
// directory, the hub's key, a person's key) and the mapping from key ids to actors that the
// verifier holds (a Keyring). Whoever holds a key can sign any record as that actor.
//
// What is verified: every record is decoded strictly (unknown fields, wrong types and
// invalid values are errors), carries an ed25519 signature over its canonical JSON
// (RFC 8785), and names the hash of its actor's previous record, so an actor's records form
// a chain in which a deletion, an insertion or a reordering shows. A record's Hash is the
// SHA-256 of its canonical JSON, signature included; artifacts, updates, snapshot metadata
// and alarm logs are named by their SHA-256, so an auditor holding one can check it.
// What is NOT verified here: that a record tells the truth (a compromised gateway can sign
// plausible lies), and that a backend kept every record: the local ledger (package
// ledger/local) is tamper-evident only; a ledger no single party controls is what the
// Fabric backend is for.
//
// What leaks: records hold identifiers (sites, gateways, models, people's names and orgs),
// times, hashes, counts, quality statistics, metrics and hyper-parameters, never the
// process data itself. Counts and times do reveal how much a site produced and when.
//
// # Use
//
// Other packages call Recorder.Record with a typed Body (DatasetSnapshot, LocalTraining,
// FederatedRound, ...). The Outbox implements Recorder: it fills the header, chains Prev,
// signs, appends the record to a checksummed, fsynced local queue and returns without
// waiting for the ledger; its Run service anchors queued records to a Backend in order,
// with retries, and dead-letters the records a backend refuses for good.
package ledger
