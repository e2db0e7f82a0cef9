package natsbus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// PasswordVariable is the environment variable that Authorization's block reads user's
// password from when the NATS server loads it: MILLWRIGHT_NATS_PASSWORD_ and the name in
// capitals, every character other than a letter or a digit as '_'.
func PasswordVariable(user string) string {
	return "MILLWRIGHT_NATS_PASSWORD_" + strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, user)
}

// Authorization returns the accounts block of a nats-server configuration for a hub that
// connects to a NATS server of its own (nats.connect) instead of embedding one, as the
// embedded server sets itself up: the hub's account, named after the hub's user, with
// JetStream and the hub's user, with every permission in it; and an account per factory,
// named after it, with the factory's user, the permissions the embedded server gives it
// (FactoryPermissions, for a server whose JetStream domain is domain; "" without one), and
// imports from the hub's account of what it may use (accounts.go says why accounts).
// Each password is read from the environment variable PasswordVariable names when the
// server loads the file (a bcrypt hash, or the password). It refuses names that are not
// member names, a factory named twice or as the hub, and two names with the same variable.
func Authorization(hub string, factories []Factory, domain string) ([]byte, error) {
	vars := map[string]string{}
	user := func(name string) (string, error) {
		if err := CheckName(name); err != nil {
			return "", fmt.Errorf("user %q: %w", name, err)
		}
		v := PasswordVariable(name)
		if other, dup := vars[v]; dup {
			if other == name {
				return "", fmt.Errorf("user %q is named twice", name)
			}
			return "", fmt.Errorf("users %q and %q would read their passwords from the same variable %s", other, name, v)
		}
		vars[v] = name
		return v, nil
	}
	lines := map[string]string{}
	v, err := user(hub)
	if err != nil {
		return nil, err
	}
	lines[hub] = fmt.Sprintf("{user: %q, password: $%s}", hub, v)
	for _, f := range factories {
		v, err := user(f.Name)
		if err != nil {
			return nil, err
		}
		if len(f.Federations) == 0 {
			return nil, fmt.Errorf("factory %q: no federations", f.Name)
		}
		for _, fed := range f.Federations {
			if err := CheckName(fed); err != nil {
				return nil, fmt.Errorf("factory %q: federation %q: %w", f.Name, fed, err)
			}
		}
		var perms bytes.Buffer
		enc := json.NewEncoder(&perms)
		enc.SetEscapeHTML(false) // the server's parser knows no \u escapes, and '>' is a wildcard
		if err := enc.Encode(FactoryPermissions(f.Name, f.Federations, domain)); err != nil {
			return nil, err
		}
		lines[f.Name] = fmt.Sprintf("{user: %q, password: $%s, permissions: %s}", f.Name, v, bytes.TrimSpace(perms.Bytes()))
	}
	var b bytes.Buffer
	b.WriteString("# NATS accounts and users of a millwright hub and its factories (millwright hub permissions).\n")
	b.WriteString("# The hub's account holds JetStream; each factory's account imports from it only what the\n")
	b.WriteString("# factory may use. Each password is read from the environment variable named after its\n")
	b.WriteString("# user: a bcrypt hash from millwright hub passwd, or the password.\n")
	accounts(&b, hub, factories, domain, func(account string) string {
		return "    users = [\n      " + lines[account] + "\n    ]\n"
	})
	return b.Bytes(), nil
}
