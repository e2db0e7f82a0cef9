package natsbus

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Why accounts: nats-server checks the subject a client publishes to against its
// permissions, never the reply subject, and JetStream answers an API request from inside
// the account that holds the streams. In one account a factory could make a request it is
// allowed (a direct get of its round state) with the reply subject set to any stream's
// subject, and the stream stored the answer: under another member's update subject, as
// the round state, as another member's receipt. No permission closes that. So the hub's
// account holds JetStream and every stream, and each factory (or OEM subscriber) has an
// account of its own, without JetStream, that imports from the hub's account exactly
// what it may use: as services the JetStream API requests it makes and the publish of its
// own update subject (a service's answer goes back through the importer's reply mapping,
// never onto a subject of the hub's account), as a stream its federations' round-state
// notices. A reply subject names a subject of the factory's own account, where nothing
// is stored; at worst, its own update subject.

// noJetStream is a subject of the hub's account that nothing answers: a factory's account
// imports it as its $JS.API.INFO (accounts).
const noJetStream = "mw.nojetstream"

// factoryAPI returns the JetStream API requests (the subjects after $JS.API.) factory
// name of feds may make: read its federations' models and round state message by
// message, and its own round receipt by a direct get.
func factoryAPI(name string, feds []string) []string {
	var api []string
	for _, fed := range feds {
		// Reads only, message by message: no consumers. A push consumer delivers to
		// whatever subject its creator names, unchecked, so one could have the server copy
		// the models into the update stream and, that stream's interest keeping it busy,
		// never be dropped. The round state is watched through the bucket's notices and
		// direct gets (WatchRound).
		for _, s := range []string{"OBJ_" + modelBucket(fed), "KV_" + roundBucket(fed)} {
			api = append(api, "STREAM.INFO."+s, "STREAM.MSG.GET."+s, "DIRECT.GET."+s, "DIRECT.GET."+s+".>")
		}
		// Its own round receipt, and nobody else's, by a direct get: not the bucket's stream
		// info, which lists every key (GetReceipt).
		rb := receiptBucket(fed)
		api = append(api, "DIRECT.GET.KV_"+rb+".$KV."+rb+"."+name)
	}
	return api
}

// accounts writes the accounts block of a nats-server configuration: the hub's account
// hub, with JetStream, exporting to each factory's account (named after the factory)
// what that factory may use, and those accounts, importing it (with domain, the
// JetStream API also under $JS.<domain>.API, as clients behind a leaf node request it).
// users writes the users of an account ("" for none).
func accounts(b *bytes.Buffer, hub string, factories []Factory, domain string, users func(account string) string) {
	type export struct {
		service bool
		subject string
		to      []string
	}
	var exports []*export
	bySubject := map[string]*export{}
	grant := func(service bool, subject, account string) {
		e := bySubject[subject]
		if e == nil {
			e = &export{service: service, subject: subject}
			bySubject[subject] = e
			exports = append(exports, e)
		}
		if !slices.Contains(e.to, account) {
			e.to = append(e.to, account)
		}
	}
	imports := make([][]string, len(factories))
	for i, f := range factories {
		service := func(subject, to string) {
			grant(true, subject, f.Name)
			im := fmt.Sprintf("{service: {account: %q, subject: %q}}", hub, subject)
			if to != "" {
				im = fmt.Sprintf("{service: {account: %q, subject: %q}, to: %q}", hub, subject, to)
			}
			imports[i] = append(imports[i], im)
		}
		for _, fed := range f.Federations {
			service(updateSubject(fed, f.Name), "")
			grant(false, roundNotice(fed), f.Name)
			imports[i] = append(imports[i], fmt.Sprintf("{stream: {account: %q, subject: %q}}", hub, roundNotice(fed)))
		}
		// An account without JetStream of its own has the server's JetStream API answer its
		// requests (that it has none) beside the imports, unless an import takes the
		// account's INFO request: this one, which nothing answers (the factory may not make
		// the request anyway).
		grant(true, noJetStream, f.Name)
		imports[i] = append(imports[i], fmt.Sprintf("{service: {account: %q, subject: %q}, to: %q}", hub, noJetStream, "$JS.API.INFO"))
		for _, api := range factoryAPI(f.Name, f.Federations) {
			service("$JS.API."+api, "")
			if domain != "" {
				service("$JS.API."+api, "$JS."+domain+".API."+api)
			}
		}
	}
	list := func(key string, items []string) {
		if len(items) == 0 {
			return
		}
		fmt.Fprintf(b, "    %s = [\n", key)
		for _, it := range items {
			fmt.Fprintf(b, "      %s\n", it)
		}
		b.WriteString("    ]\n")
	}
	b.WriteString("accounts {\n")
	fmt.Fprintf(b, "  %q: {\n    jetstream: enabled\n", hub)
	b.WriteString(users(hub))
	var ex []string
	for _, e := range exports {
		kind := "stream"
		if e.service {
			kind = "service"
		}
		to := ""
		for j, a := range e.to {
			if j > 0 {
				to += ", "
			}
			to += fmt.Sprintf("%q", a)
		}
		ex = append(ex, fmt.Sprintf("{%s: %q, accounts: [%s]}", kind, e.subject, to))
	}
	list("exports", ex)
	b.WriteString("  }\n")
	for i, f := range factories {
		fmt.Fprintf(b, "  %q: {\n", f.Name)
		b.WriteString(users(f.Name))
		list("imports", imports[i])
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
}

// globalAccount is the account nats-server puts users in when it has no accounts: where
// the embedded server kept the hub's streams before it had accounts.
const globalAccount = "$G"

// moveStreams moves the JetStream storage of one account to another in storeDir (a
// server's store_dir), unless the other has storage there already, and reports whether it
// did: the streams of a hub from before accounts carry over from the global account to
// the hub's.
func moveStreams(storeDir, fromAccount, toAccount string) (bool, error) {
	if storeDir == "" {
		return false, nil
	}
	from := filepath.Join(storeDir, "jetstream", fromAccount)
	to := filepath.Join(storeDir, "jetstream", toAccount)
	if _, err := os.Stat(from); err != nil {
		return false, nil
	}
	if _, err := os.Stat(to); err == nil {
		return false, nil
	}
	if err := os.Rename(from, to); err != nil {
		return false, fmt.Errorf("natsbus: move the streams of %s to %s: %w", from, to, err)
	}
	return true, nil
}
