// Package fabrictest connects tests to the Fabric network deploy/fabric/network.sh runs.
package fabrictest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/fabric"
)

// Require skips t unless the Fabric network's environment is loaded (MILLWRIGHT_FABRIC=1,
// which `make test` and `. .fabric/env` set).
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv("MILLWRIGHT_FABRIC") != "1" {
		t.Skip("Fabric network not available: MILLWRIGHT_FABRIC is not 1; run `make fabric-up && . .fabric/env` (make test does both)")
	}
}

// Config returns the client settings of org's user on the test network, skipping t when
// the network is not up.
func Config(t testing.TB, org string) fabric.Config {
	t.Helper()
	Require(t)
	c, err := fabric.ConfigFromEnv(org, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Client opens a client of org that registers the keys of actors on first use; it is
// closed when the test ends.
func Client(t testing.TB, org string, actors ...*ledger.Signer) *fabric.Client {
	t.Helper()
	c, err := fabric.Open(Config(t, org), fabric.WithActors(actors...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// Freeze suspends the network process name ("peer-factory-a", "orderer", ...) that
// network.sh started, as an outage that keeps its state: calls to it hang until they time
// out. The returned function resumes it; so does the end of the test.
func Freeze(t testing.TB, name string) (resume func()) {
	t.Helper()
	Require(t)
	pid, err := networkPID(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("freeze %s (pid %d): %v", name, pid, err)
	}
	resumed := false
	resume = func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("resume %s (pid %d): %v", name, pid, err)
			}
		}
	}
	t.Cleanup(resume)
	return resume
}

// networkPID reads the PID network.sh recorded for name and checks that it still runs the
// executable recorded with it.
func networkPID(name string) (int, error) {
	path := filepath.Join(os.Getenv("MILLWRIGHT_FABRIC_DIR"), "run", name+".pid")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("network process %s: %w", name, err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, fmt.Errorf("network process %s: %s holds %q, expected \"PID EXECUTABLE\"", name, path, b)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, fmt.Errorf("network process %s: %w", name, err)
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != f[1] {
		return 0, fmt.Errorf("network process %s: pid %d does not run %s (%v)", name, pid, f[1], err)
	}
	return pid, nil
}
