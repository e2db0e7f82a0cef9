// Package audit answers an auditor's questions about a model version from a ledger: its lineage, whether an artifact is that version, and the evidence pack.
//
// # Threat model
//
// What the audit proves: that the records it shows were signed by the keys the auditor's
// keyring trusts (an actor named by an unknown key, or a record whose actor does not match
// the name its key was registered under, is reported and fails verification); that an
// artifact file is byte for byte the one those records name (its SHA-256); and, for a
// backend with a chain (the local ledger), that the file read is one unbroken hash chain,
// so an entry edited, deleted, inserted or reordered after it was written is reported with
// its position.
//
// What it cannot prove: that a record tells the truth (a signer can sign plausible lies;
// counts, metrics and windows are what the actor attested, not what the auditor measured);
// that the ledger holds every record (a backend can omit records; a lineage names the
// ancestors and snapshots it could not find); and, for the local ledger, that the file was
// not rewritten as a whole: the local ledger is tamper-evident, not tamper-proof. Whoever
// controls the file and holds the actors' keys can rebuild a consistent chain; compare the
// head hash a report prints with one kept elsewhere, or use a ledger no single party
// controls (the Fabric backend, to come). The keyring is trusted as given: an auditor who
// accepts a forger's key accepts the forger's records.
//
// The package reads through ledger.Querier only, so every backend can be audited the same
// way; backend-specific integrity checks plug in as a ChainVerifier.
package audit
