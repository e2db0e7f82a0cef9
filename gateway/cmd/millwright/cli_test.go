package main

import (
	"bytes"
	"strings"
	"testing"
)

// runCLI runs the command line args and reports on t an exit code other than code and each
// fragment of wantStdout or wantStderr that the output lacks. It returns the output for
// further checks.
func runCLI(t *testing.T, args []string, code int, wantStdout, wantStderr []string) (stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	got := run(args, &out, &errOut)
	stdout, stderr = out.String(), errOut.String()
	if got != code {
		t.Errorf("run(%q) = %d, want %d\nstdout:\n%s\nstderr:\n%s", args, got, code, stdout, stderr)
	}
	for _, f := range wantStdout {
		if !strings.Contains(stdout, f) {
			t.Errorf("stdout lacks %q:\n%s", f, stdout)
		}
	}
	for _, f := range wantStderr {
		if !strings.Contains(stderr, f) {
			t.Errorf("stderr lacks %q:\n%s", f, stderr)
		}
	}
	return stdout, stderr
}

// cliCase is a command line and what running it must give.
type cliCase struct {
	name           string
	args           []string
	code           int
	stdout, stderr []string // fragments the output must contain
}

// runCLICases runs each case with runCLI in a subtest of its name.
func runCLICases(t *testing.T, cases []cliCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runCLI(t, c.args, c.code, c.stdout, c.stderr) })
	}
}
