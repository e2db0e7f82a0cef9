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

// Authorization returns the authorization block of a nats-server configuration for a hub
// that connects to a NATS server of its own (nats.connect) instead of embedding one: the
// hub's user, with every permission, and each factory's user with the permissions the
// embedded server gives it (FactoryPermissions, for a server whose JetStream domain is
// domain; "" without one). Each password is read from the environment variable
// PasswordVariable names when the server loads the file (a bcrypt hash, or the password).
// It refuses names that are not member names, a factory named twice or as the hub, and
// two names with the same variable.
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
	var b bytes.Buffer
	b.WriteString("# NATS users of a millwright hub and its factories (millwright hub permissions).\n")
	b.WriteString("# Each password is read from the environment variable named after its user: a bcrypt\n")
	b.WriteString("# hash from millwright hub passwd, or the password.\n")
	b.WriteString("authorization {\n  users = [\n")
	v, err := user(hub)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(&b, "    {user: %q, password: $%s}\n", hub, v)
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
		fmt.Fprintf(&b, "    {user: %q, password: $%s, permissions: %s}\n", f.Name, v, bytes.TrimSpace(perms.Bytes()))
	}
	b.WriteString("  ]\n}\n")
	return b.Bytes(), nil
}
