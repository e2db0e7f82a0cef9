// Package fabric is the ledger's Hyperledger Fabric backend: a client of the lineage chaincode through the Fabric Gateway service.
//
// # Threat model
//
// What is trusted: the peer the client talks to (its TLS certificate must chain to
// Config.TLSCA) for answers to queries (an evaluation is answered by one peer; a client
// that distrusts it asks another organisation's peer), and the endorsement policy of the
// channel for writes: a record is on the ledger once peers of two of the three peer
// organisations have run the chaincode's checks and the orderer has committed it.
//
// What is verified: the client signs every proposal with its X.509 identity of Config.MSPID;
// the chaincode checks that identity's MSP against the record's actor org, the record's
// schema and its ed25519 signature (see package ledger/chaincode). Records read back are
// decoded strictly; their signatures are checked by the auditor's keyring (ledger/audit).
//
// What leaks: the client's certificate and every record it anchors are visible to every
// channel member.
//
// This package is the only importer of fabric-gateway in the gateway binary. The
// deprecated fabric-sdk-go is not used: its service discovery fails against Fabric v3
// channels.
package fabric
