// Command lineage-cc serves the lineage chaincode as a Fabric chaincode-as-a-service
// server: the peer dials it at LINEAGE_CC_ADDRESS and knows it by LINEAGE_CC_ID (the
// package id of the ccaas package naming that address). LINEAGE_HUB_ORGS and
// LINEAGE_READER_ORGS override the roles of organisations, LINEAGE_CLOCK_TOLERANCE how far
// a transaction's time may be from the peer's clock (see chaincode.Policy).
// deploy/fabric/network.sh starts one per peer organisation.
package main

import (
	"fmt"
	"os"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"

	"github.com/millwright-io/millwright/ledger/chaincode"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "lineage-cc:", err)
		os.Exit(1)
	}
}

func run() error {
	addr, id := os.Getenv("LINEAGE_CC_ADDRESS"), os.Getenv("LINEAGE_CC_ID")
	if addr == "" || id == "" {
		return fmt.Errorf("LINEAGE_CC_ADDRESS=%q and LINEAGE_CC_ID=%q: expected the listen address (host:port) and the chaincode package id", addr, id)
	}
	p, err := chaincode.PolicyFromEnv()
	if err != nil {
		return err
	}
	cc, err := chaincode.New(p)
	if err != nil {
		return err
	}
	srv := &shim.ChaincodeServer{CCID: id, Address: addr, CC: cc, TLSProps: shim.TLSProperties{Disabled: true}}
	return srv.Start()
}
