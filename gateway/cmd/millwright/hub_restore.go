package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/signoff"
)

// The hub's model restore: retention deletes the models of old rounds unless people
// approved or released them (keep_models), and a version approved after its model was
// deleted could not be fetched. Whoever holds the model file (the engineer who evaluated
// it: `models approve|release --hub URL --file FILE`) hands it back. The file needs no
// trust of its own: the hub stores it only when its SHA-256 is the one the hub's own
// round record gives the version, and only for a version people approved or released.

// modelPath is where a version's model is handed back (PUT).
const modelPath = "/api/v1/federations/{federation}/versions/{version}/model"

// restoreAPI serves PUT modelPath for the hub's federations.
type restoreAPI struct {
	lg       ledger.Querier // the hub's ledger
	tr       federation.Transport
	hub      ed25519.PublicKey // the hub's key, which signs its round records
	maxBytes map[string]int64  // the largest model file of each federation
	log      *slog.Logger
}

// restoreResult is PUT modelPath's answer.
type restoreResult struct {
	Model    string `json:"model"`    // the version's SHA-256
	Restored bool   `json:"restored"` // false: the hub still stored it
}

// newRestoreAPI returns the restore API of the federations feds.
func newRestoreAPI(lg ledger.Querier, tr federation.Transport, hub ed25519.PublicKey, feds []federation.FederationConfig, log *slog.Logger) restoreAPI {
	max := map[string]int64{}
	for _, f := range feds {
		max[f.Name] = 4*int64(f.Architecture.Params) + 64<<10 // the parameters, the header and the signature
	}
	return restoreAPI{lg: lg, tr: tr, hub: hub, maxBytes: max, log: log}
}

// put takes a version's model file: 200 when the hub stores it again, or still stores it
// (then without reading the file: a client that sent "Expect: 100-continue" does not send
// it), 404 for a federation or version the hub does not know, 409 for a version people
// have not approved or released, 413 for a file larger than the federation's models, 422
// for a file that is not the version's model, 503 when the store cannot take it now.
func (a restoreAPI) put(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ref := ledger.ModelRef{Model: r.PathValue("federation"), Version: r.PathValue("version")}
	limit, ok := a.maxBytes[ref.Model]
	if !ok {
		http.Error(w, fmt.Sprintf("the hub runs no federation %q", ref.Model), http.StatusNotFound)
		return
	}
	v, err := signoff.Find(ctx, a.lg, ref)
	if readFailed(w, err) {
		return
	}
	body, _ := v.Producer.DecodeBody()
	round, ok := body.(ledger.FederatedRound)
	if !ok || round.Federation != ref.Model || v.Producer.Header.Actor.KeyID != ledger.KeyID(a.hub) || ledger.Verify(v.Producer, a.hub) != nil {
		http.Error(w, fmt.Sprintf("%s was not produced by a round of this hub (record %s, a %s by %s)", ref, v.Producer.Header.ID,
			v.Producer.Header.Type, v.Producer.Header.Actor.Name), http.StatusNotFound)
		return
	}
	if !v.SignedOff() {
		http.Error(w, fmt.Sprintf("%s is neither approved nor released: the hub keeps the models people signed off, and deletes the others past keep_models", ref), http.StatusConflict)
		return
	}
	stored, err := a.stored(ctx, ref, v.Artifact)
	if err == nil && !stored {
		err = a.restore(w, r, ref, v.Artifact, limit)
	}
	if err != nil {
		var he httpError
		if !errors.As(err, &he) {
			he = httpError{http.StatusServiceUnavailable, err.Error()}
		}
		http.Error(w, fmt.Sprintf("%s: %s", ref, he.msg), he.code)
		return
	}
	if !stored {
		a.log.Info("model restored", "version", ref.String(), "model", v.Artifact, "from", r.RemoteAddr)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(restoreResult{Model: v.Artifact, Restored: !stored})
}

// httpError is a refusal with its status code.
type httpError struct {
	code int
	msg  string
}

func (e httpError) Error() string { return e.msg }

// stored says whether the hub stores the model of ref, whose SHA-256 is hash, and makes
// ref name it when the hub's store has no such version.
func (a restoreAPI) stored(ctx context.Context, ref ledger.ModelRef, hash string) (bool, error) {
	switch got, err := a.tr.GetVersion(ctx, ref.Model, ref.Version); {
	case errors.Is(err, federation.ErrNotFound):
		if err := a.tr.PutVersion(ctx, ref.Model, ref.Version, hash); err != nil {
			return false, err
		}
	case err != nil:
		return false, err
	case got != hash:
		return false, fmt.Errorf("the hub's store names model %s for it, not the %s its round record gives", got, hash)
	}
	_, err := a.tr.GetModel(ctx, ref.Model, hash)
	if errors.Is(err, federation.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// restore reads the file of r's body, at most limit bytes, and stores it when its SHA-256
// is hash, the model of ref.
func (a restoreAPI) restore(w http.ResponseWriter, r *http.Request, ref ledger.ModelRef, hash string, limit int64) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if tooLarge := new(http.MaxBytesError); errors.As(err, &tooLarge) {
		return httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("the file is larger than the federation's models (at most %d bytes)", limit)}
	} else if err != nil {
		return httpError{http.StatusBadRequest, "reading the file: " + err.Error()}
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != hash {
		return httpError{http.StatusUnprocessableEntity, fmt.Sprintf("the file (sha256 %x) is not %s, whose model the hub's round record gives as sha256 %s", sum, ref, hash)}
	}
	return a.tr.PutModel(r.Context(), ref.Model, hash, data)
}

// restore hands the hub the model file of ref; it says whether the hub stored it again.
func (h *hubLedger) restore(ctx context.Context, ref ledger.ModelRef, data []byte) (bool, error) {
	path := "/api/v1/federations/" + url.PathEscape(ref.Model) + "/versions/" + url.PathEscape(ref.Version) + "/model"
	// The hub answers at once, without the file, when it still stores the model.
	resp, msg, err := h.call(ctx, http.MethodPut, path, "application/octet-stream", data, "Expect", "100-continue")
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("hub %s: %s: %s", h.base, resp.Status, bytes.TrimSpace(msg))
	}
	var out restoreResult
	if err := json.Unmarshal(msg, &out); err != nil {
		return false, fmt.Errorf("hub %s: its answer: %w", h.base, err)
	}
	return out.Restored, nil
}

const restoreUsage = `usage: millwright models restore FEDERATION@VERSION --file FILE --hub URL [flags]

Hands the hub the model file of a federation's version (one 'models pull' wrote), which it
stores again if retention (keep_models) deleted it, so that subscribers can fetch the
version. The hub takes it only when the file's SHA-256 is the one its own round record
gives the version, and people approved or released the version. 'models approve|release
--hub URL --file FILE' do this too; this command is for ledgers people record in without
the hub (Fabric).

Flags:
`

func cmdModelsRestore(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("models restore", flag.ContinueOnError)
	var base, file string
	var tc config.TLS
	fs.StringVar(&base, "hub", "", "the hub's HTTP API, such as https://hub.example:9274 (required)")
	fs.StringVar(&file, "file", "", "the version's model file (required)")
	registerHubTLS(fs, &tc)
	pos, usage, help, err := parseCommand(fs, restoreUsage, args, stdout)
	if help {
		return 0
	}
	switch {
	case err != nil:
	case len(pos) != 1:
		err = fmt.Errorf("%d arguments %q, expected one FEDERATION@VERSION", len(pos), pos)
	case base == "":
		err = errors.New("--hub URL is required: the hub's HTTP API")
	case file == "":
		err = errors.New("--file FILE is required: the version's model file")
	}
	var ref ledger.ModelRef
	if err == nil {
		ref, err = audit.ParseModelRef(pos[0])
	}
	if err != nil {
		fmt.Fprintf(stderr, "millwright models restore: %v\n\n", err)
		usage(stderr)
		return 2
	}
	hub, err := newHubLedger(base, tc)
	var data []byte
	if err == nil {
		data, err = os.ReadFile(file)
	}
	var restored bool
	if err == nil {
		restored, err = hub.restore(ctx, ref, data)
	}
	if err != nil {
		fmt.Fprintf(stderr, "millwright models restore: %s: %v\n", ref, err)
		return 1
	}
	if restored {
		fmt.Fprintf(stdout, "%s: the hub stored its model again from %s\n", ref, file)
	} else {
		fmt.Fprintf(stdout, "%s: the hub still stores its model\n", ref)
	}
	return 0
}
