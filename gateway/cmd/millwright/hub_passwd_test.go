package main

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/millwright-io/millwright/federation/natsbus"
)

func TestHubPasswd(t *testing.T) {
	for _, c := range []struct {
		name, stdin, password string
		code                  int
	}{
		{"line", "factory secret\n", "factory secret", 0},
		{"crlf", "factory secret\r\nsecond line\n", "factory secret", 0},
		{"no newline", "s3cret", "s3cret", 0},
		{"empty", "\n", "", 1},
		{"too long", strings.Repeat("x", 73) + "\n", "", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cmdHubPasswd(strings.NewReader(c.stdin), &stdout, &stderr)
			if code != c.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, c.code, stderr.String())
			}
			if c.code != 0 {
				if stdout.Len() != 0 || !strings.Contains(stderr.String(), "1 to 72 bytes") {
					t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
				}
				return
			}
			hash := strings.TrimSuffix(stdout.String(), "\n")
			if !natsbus.IsBcrypt(hash) || bcrypt.CompareHashAndPassword([]byte(hash), []byte(c.password)) != nil {
				t.Fatalf("%q is not the bcrypt hash of %q", hash, c.password)
			}
		})
	}
}
