package chaincode

import (
	"encoding/json"
	"fmt"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Contract exposes Store as the chaincode's transactions (the functions of package wire).
// Every argument and result is a string; results are JSON documents.
type Contract struct {
	contractapi.Contract
	store Store
}

// New returns the lineage chaincode enforcing p.
func New(p Policy) (*contractapi.ContractChaincode, error) {
	c := &Contract{store: Store{Policy: p}}
	c.Name = "lineage"
	c.Info.Title = "Millwright lineage ledger"
	c.Info.Version = "1"
	cc, err := contractapi.NewChaincode(c)
	if err != nil {
		return nil, fmt.Errorf("lineage chaincode: %w", err)
	}
	return cc, nil
}

func mspOf(ctx contractapi.TransactionContextInterface) (string, error) {
	msp, err := ctx.GetClientIdentity().GetMSPID()
	if err != nil {
		return "", fmt.Errorf("client identity: %w", err)
	}
	return msp, nil
}

func jsonResult(v any, err error) (string, error) {
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// Anchor stores a record written by the submitter's organisation.
func (c *Contract) Anchor(ctx contractapi.TransactionContextInterface, record string) (string, error) {
	msp, err := mspOf(ctx)
	if err != nil {
		return "", err
	}
	return jsonResult(c.store.Anchor(ctx.GetStub(), msp, record))
}

// RegisterKey registers an actor's ed25519 public key for the submitter's organisation.
func (c *Contract) RegisterKey(ctx contractapi.TransactionContextInterface, name, public string) (string, error) {
	msp, err := mspOf(ctx)
	if err != nil {
		return "", err
	}
	return jsonResult(c.store.RegisterKey(ctx.GetStub(), msp, name, public))
}

// GetKey returns a registered key.
func (c *Contract) GetKey(ctx contractapi.TransactionContextInterface, keyID string) (string, error) {
	return jsonResult(c.store.GetKey(ctx.GetStub(), keyID))
}

// Get returns a record.
func (c *Contract) Get(ctx contractapi.TransactionContextInterface, id string) (string, error) {
	b, err := c.store.Get(ctx.GetStub(), id)
	return string(b), err
}

// Query returns a page of the records a wire.Query selects.
func (c *Contract) Query(ctx contractapi.TransactionContextInterface, query, bookmark string) (string, error) {
	return jsonResult(c.store.Query(ctx.GetStub(), query, bookmark))
}

// Lineage returns the provenance DAG of a model version.
func (c *Contract) Lineage(ctx contractapi.TransactionContextInterface, model, version string) (string, error) {
	return jsonResult(c.store.Lineage(ctx.GetStub(), model, version))
}

// Appended returns when records were appended (Store.Appended).
func (c *Contract) Appended(ctx contractapi.TransactionContextInterface, ids string) (string, error) {
	return jsonResult(c.store.Appended(ctx.GetStub(), ids))
}

// History returns when and in which transaction a record was written.
func (c *Contract) History(ctx contractapi.TransactionContextInterface, id string) (string, error) {
	return jsonResult(c.store.History(ctx.GetStub(), id))
}
