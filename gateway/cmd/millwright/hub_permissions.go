package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/millwright-io/millwright/federation/natsbus"
)

const hubPermissionsUsage = `usage: millwright hub permissions --federations F[,F...] [--hub-user NAME] [--domain D] FACTORY...

Prints the accounts block of a nats-server configuration for a hub that connects to a
NATS server of its own (nats.connect), as the embedded server sets itself up: the hub's
account, named after its user, with JetStream and the hub's user, with every permission;
and an account per FACTORY, named after it, without JetStream, with the factory's user,
the permissions the embedded server gives a factory of federations F (publish only its own
updates, read only its federations' models, round state and its own receipts, no
consumers), and imports from the hub's account of just that. Each password is read, when
the server loads the file, from an environment variable named after its user
(MILLWRIGHT_NATS_PASSWORD_<USER>): a bcrypt hash from millwright hub passwd, or the
password. A server that loaded the authorization block of an earlier version needs this
one instead, and its streams moved to the hub's account (docs/federation.md).

Flags:
`

// cmdHubPermissions prints the NATS accounts and users of a hub and its factories.
func cmdHubPermissions(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hub permissions", flag.ContinueOnError)
	feds := fs.String("federations", "", "the federations the factories belong to, comma-separated")
	hub := fs.String("hub-user", "hub", "the hub's NATS user (nats.connect.user in its configuration)")
	domain := fs.String("domain", "", "the server's JetStream domain, when it has one (gateways linked through leaf nodes need it: hub, their default nats.domain)")
	factories, code, ok := parseFlags(fs, hubPermissionsUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	var problems []error
	if *feds == "" {
		problems = append(problems, errors.New("--federations is missing; expected the federations the factories belong to"))
	}
	if len(factories) == 0 {
		problems = append(problems, errors.New("no FACTORY; expected the factories' NATS users"))
	}
	if len(problems) > 0 {
		return usageError(fs, hubPermissionsUsage, errors.Join(problems...), stderr)
	}
	var grants []natsbus.Factory
	for _, name := range factories {
		grants = append(grants, natsbus.Factory{Name: name, Federations: strings.Split(*feds, ",")})
	}
	block, err := natsbus.Authorization(*hub, grants, *domain)
	if err != nil {
		return usageError(fs, hubPermissionsUsage, err, stderr)
	}
	if _, err := stdout.Write(block); err != nil {
		fmt.Fprintf(stderr, "millwright hub permissions: %v\n", err)
		return 1
	}
	return 0
}
