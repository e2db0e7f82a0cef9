// Package chaincode is the lineage chaincode: an append-only store of signed ledger records on a Fabric channel.
//
// # Threat model
//
// What is trusted: the channel's MSPs (a client's MSP id is what its certificate proves),
// the endorsement policy (two of the three peer organisations must run this chaincode and
// agree on every write, so no single organisation can write what the rules refuse), and
// the Policy every endorsing organisation starts its chaincode process with (a differing
// policy makes the endorsements differ, and the transaction fails).
//
// What is verified on every Anchor: the record decodes strictly and validates
// (ledger.DecodeRecord); its actor's ed25519 key is registered on the ledger by the
// actor's organisation and the signature verifies with it; the submitting client's MSP id
// equals the record's actor org (the identity mapping: an organisation's MSP id IS the
// `org` of its actors); the organisation may write (Policy.Readers only read) and may write
// that type (federated rounds only from Policy.Hubs); a site belongs to the organisation
// that wrote its first record, and only that organisation writes more records for it; an id
// is written once: the same record again is a no-op, another record under that id is a
// conflict. The transaction's time (set by the submitting client) is within
// Policy.ClockTolerance of each endorsing peer's clock, and is stored with the record
// (wire.Appended): so an auditor knows when a record was appended, whatever time its
// signer wrote in it, and a record signed with a revoked key and dated before the
// revocation is caught when it was appended after (package audit).
//
// What is NOT verified: that a record tells the truth (an organisation can sign plausible
// lies about its own sites), and the actor's chain of Prev hashes (the auditor checks it).
//
// What leaks: every channel member reads every record (identifiers, times, hashes, counts,
// metrics), never process data.
//
// # State
//
// Keys are plain strings whose parts are separated by a space, which no identifier
// contains, so a prefix range selects exactly one site, model or version:
//
//	r <id>                                  the record (canonical JSON)
//	a <id>                                  when it was appended (wire.Appended)
//	t <time> <id>                           every record, by header time
//	s <site> <time> <id>                    by site
//	m <model> <version> <time> <id>         records about a model version (ledger.Subject)
//	p <model> <version> <time> <id>         records producing a model version (ledger.Producer)
//	k <key id>                              a registered actor key (wire.Key)
//	o <site>                                the organisation owning a site
//
// Times are UTC with nine fractional digits, so their byte order is their time order.
package chaincode
