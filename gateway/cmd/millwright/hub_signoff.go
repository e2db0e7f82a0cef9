package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/millwright-io/millwright/gateway"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
)

// The hub's sign-off API: people's approvals and releases, signed with their own keys and
// chained through their own outboxes (`models approve|release --hub URL`), reach the
// hub's local ledger while the hub runs and holds it. The hub takes a record only from a
// key of its signoff.keys keyring (not revoked, under the name and organisation listed
// there), and only of those two types.
const (
	ledgerRecordsPath = "/api/v1/ledger/records"
	// maxRecordBody bounds a posted record (a record's body is at most 64 KiB).
	maxRecordBody = 128 << 10
)

// hubSignOffConfig is the hub's signoff section.
type hubSignOffConfig struct {
	// Keys is a keyring file (the auditors' format: NAME ORG BASE64-KEY [records=..] [channels=..] [models=..] [revoked=..]) of
	// the people whose approvals and releases the hub takes over its HTTP API into its
	// local ledger ("": the API is off).
	Keys string `yaml:"keys"`
}

// signOffAPI serves the sign-off API for the hub's ledger lg.
type signOffAPI struct {
	lg   *gateway.Ledger
	keys *audit.Keyring
	log  *slog.Logger
}

// post takes one signed record: 200 when the ledger holds it (again, for a record sent
// twice), 400 for a malformed request, 403 for a key the hub does not take records from,
// 422 for a record the ledger refuses (wrong type, invalid body, a conflicting record
// under its id), 503 when the ledger cannot take it now.
func (a signOffAPI) post(w http.ResponseWriter, r *http.Request) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRecordBody))
	dec.DisallowUnknownFields()
	var rec ledger.Record
	if err := dec.Decode(&rec); err != nil {
		http.Error(w, "a ledger record in JSON expected: "+err.Error(), http.StatusBadRequest)
		return
	}
	if t := rec.Header.Type; t != ledger.TypeApproval && t != ledger.TypeRelease {
		http.Error(w, fmt.Sprintf("record %s is a %s; the hub takes approval and release records only", rec.Header.ID, t), http.StatusUnprocessableEntity)
		return
	}
	if err := a.keys.Check(rec); err != nil {
		http.Error(w, "not taken: "+err.Error()+" (the hub's signoff.keys)", http.StatusForbidden)
		return
	}
	// The hub receives the record now: a key revoked by now signs nothing it takes, whatever
	// date the record bears (a stolen key's record would say it was made before). One the
	// ledger took before the revocation and that comes again (its answer was lost) is held.
	if at := a.keys.Revoked(rec.Header.Actor.KeyID); !at.IsZero() && !time.Now().Before(at) && !a.holds(r.Context(), rec) {
		http.Error(w, fmt.Sprintf("not taken: record %s: %v: the key of %s (%s) was revoked at %s, and the hub takes none of its records after that, whatever their date (the hub's signoff.keys)",
			rec.Header.ID, audit.ErrRevoked, rec.Header.Actor.Name, rec.Header.Actor.Org, at.Format(time.RFC3339)), http.StatusForbidden)
		return
	}
	err := a.lg.Anchor(r.Context(), rec)
	switch {
	case errors.Is(err, ledger.ErrRejected) || errors.Is(err, ledger.ErrConflict):
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	a.log.Info("sign-off recorded", "type", rec.Header.Type, "record", rec.Header.ID, "actor", rec.Header.Actor.Name, "org", rec.Header.Actor.Org)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"id": rec.Header.ID})
}

// holds says whether the hub's ledger holds rec as it is.
func (a signOffAPI) holds(ctx context.Context, rec ledger.Record) bool {
	held, err := a.lg.Get(ctx, rec.Header.ID)
	if err != nil {
		return false
	}
	h1, err1 := ledger.Hash(held)
	h2, err2 := ledger.Hash(rec)
	return err1 == nil && err2 == nil && h1 == h2
}

// get returns a record of the hub's ledger by id (404 when there is none).
func (a signOffAPI) get(w http.ResponseWriter, r *http.Request) {
	rec, err := a.lg.Get(r.Context(), r.PathValue("id"))
	if readFailed(w, err) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(rec)
}

// readFailed answers a failed read of the ledger, if err is one: 404 for what the ledger
// does not hold, 503 for anything else. It says whether it answered.
func readFailed(w http.ResponseWriter, err error) bool {
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	}
	return err != nil
}

// hubLedger is the backend a person's outbox anchors in through the hub's sign-off API.
type hubLedger struct {
	base   string // the hub's HTTP API, such as http://127.0.0.1:9274
	client *http.Client
}

// newHubLedger returns the backend of the hub's API at base; an https:// base is reached
// with tc (the hub's CA, and a client certificate for mutual TLS).
func newHubLedger(base string, tc config.TLS) (*hubLedger, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--hub %q: expected the hub's HTTP API, such as http://127.0.0.1:9274", base)
	}
	if err := tc.Validate(); err != nil {
		return nil, fmt.Errorf("--hub-cert, --hub-key: %w", err)
	}
	if tc.Active() && u.Scheme != "https" {
		return nil, fmt.Errorf("--hub %q: --hub-ca, --hub-cert and --hub-key need an https:// URL", base)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if u.Scheme == "https" {
		tc.Enabled = true
		if transport.TLSClientConfig, err = tc.Load(); err != nil {
			return nil, fmt.Errorf("--hub %s: %w", base, err)
		}
	}
	return &hubLedger{base: strings.TrimSuffix(base, "/"), client: &http.Client{Timeout: 30 * time.Second, Transport: transport}}, nil
}

// Anchor implements ledger.Backend: the hub's refusals are permanent (ledger.ErrRejected),
// anything else is retried by the outbox.
func (h *hubLedger) Anchor(ctx context.Context, rec ledger.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("%w: %v", ledger.ErrRejected, err)
	}
	resp, msg, err := h.call(ctx, http.MethodPost, ledgerRecordsPath, "application/json", b)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusBadRequest, http.StatusForbidden, http.StatusUnprocessableEntity, http.StatusNotFound:
		return fmt.Errorf("%w: hub %s: %s: %s", ledger.ErrRejected, h.base, resp.Status, strings.TrimSpace(string(msg)))
	default:
		return fmt.Errorf("hub %s: %s: %s", h.base, resp.Status, strings.TrimSpace(string(msg)))
	}
}

// call sends body to path of the hub's API, with the header fields of header (name,
// value, ...), and returns the answer with the first 4 KiB of its body.
func (h *hubLedger) call(ctx context.Context, method, path, contentType string, body []byte, header ...string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("hub %s: %w", h.base, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp, msg, nil
}

// Get implements ledger.Backend.
func (h *hubLedger) Get(ctx context.Context, id string) (ledger.Record, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+ledgerRecordsPath+"/"+url.PathEscape(id), nil)
	if err != nil {
		return ledger.Record{}, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return ledger.Record{}, fmt.Errorf("hub %s: %w", h.base, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		var rec ledger.Record
		err := json.NewDecoder(io.LimitReader(resp.Body, maxRecordBody)).Decode(&rec)
		return rec, err
	case http.StatusNotFound:
		return ledger.Record{}, fmt.Errorf("record %s: %w", id, ledger.ErrNotFound)
	default:
		return ledger.Record{}, fmt.Errorf("hub %s: %s", h.base, resp.Status)
	}
}

// Close implements the backend's Close: nothing to release.
func (h *hubLedger) Close() error { return nil }
