package natsbus

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/testlog"
)

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("s3cret factory password")
	if err != nil {
		t.Fatal(err)
	}
	if !IsBcrypt(h) || !strings.HasPrefix(h, "$2a$10$") || strings.Contains(h, "s3cret") {
		t.Fatalf("hash %q", h)
	}
	h2, _ := HashPassword("s3cret factory password")
	if h2 == h {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for _, pw := range []string{"", strings.Repeat("x", 73)} {
		if _, err := HashPassword(pw); !errors.Is(err, ErrPasswordLength) {
			t.Errorf("HashPassword of %d bytes: %v, want ErrPasswordLength", len(pw), err)
		}
	}
	for s, want := range map[string]bool{
		h: true, strings.Replace(h, "$2a$", "$2b$", 1): true,
		"plaintext": false, h[:59]: false, h + "x": false, "$2a$10$" + strings.Repeat("!", 53): false,
		"$2a$99$" + h[7:]: false, // cost out of range
	} {
		if got := IsBcrypt(s); got != want {
			t.Errorf("IsBcrypt(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestBcryptFactoryPassword runs the embedded server with one factory's password given as
// a bcrypt hash and one in plaintext: both authenticate with their password (and not
// with a wrong one, nor with the hash itself), and only the plaintext one is warned about.
func TestBcryptFactoryPassword(t *testing.T) {
	hash, err := HashPassword("pa")
	if err != nil {
		t.Fatal(err)
	}
	log, logs := testlog.New(slog.LevelWarn)
	// The hub's own connection works too: its random password is stored as a hash.
	srv, hub := serve(t, ServerConfig{Listen: freeAddr(t), StoreDir: t.TempDir(), Factories: []Factory{
		{Name: "a", Password: config.NewSecret(hash), Federations: []string{"f1"}},
		{Name: "b", Password: config.NewSecret("pb"), Federations: []string{"f1"}},
	}}, log)
	ctx := context.Background()
	if err := hub.PutRound(ctx, "f1", []byte("s")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, pw string
		ok       bool
	}{
		{"a", "pa", true}, {"a", "wrong", false}, {"a", hash, false}, {"b", "pb", true}, {"b", "wrong", false},
	} {
		cc := factory(srv, c.user, c.pw)
		cc.SetDefaults() // the default timeout: bcrypt under -race on a busy machine takes seconds
		b, err := Dial(ctx, cc, slog.New(slog.DiscardHandler))
		if (err == nil) != c.ok {
			t.Errorf("%s with password %q: connect error %v, want success %v", c.user, c.pw, err, c.ok)
		}
		if err == nil {
			if got, err := b.GetRound(ctx, "f1"); err != nil || string(got) != "s" {
				t.Errorf("%s reads the round state: %q, %v", c.user, got, err)
			}
			_ = b.Close()
		}
	}
	out := logs.String()
	if !strings.Contains(out, "plaintext") || !strings.Contains(out, "factory=b") {
		t.Errorf("no warning about b's plaintext password in:\n%s", out)
	}
	if strings.Contains(out, "factory=a") || strings.Contains(out, "Plaintext passwords detected") {
		t.Errorf("warned about a's hashed password, or twice about b's:\n%s", out)
	}
	if strings.Contains(out, "pb") || strings.Contains(out, hash) {
		t.Errorf("a password or hash is in the log:\n%s", out)
	}
}

func TestBcryptPasswordValidate(t *testing.T) {
	hash, _ := HashPassword("pa")
	cfg := ServerConfig{Listen: "127.0.0.1:4222", Factories: []Factory{
		{Name: "a", Password: config.NewSecret(hash), Federations: []string{"f1"}},
		{Name: "b", Password: config.NewSecret(hash[:40]), Federations: []string{"f1"}}, // truncated by a copy-paste
		{Name: "c", Password: config.NewSecret("plain"), Federations: []string{"f1"}},
	}}
	err := cfg.Validate()
	var paths []string
	for _, e := range config.Flatten(err) {
		var fe *config.FieldError
		if errors.As(e, &fe) {
			paths = append(paths, fe.Path)
		}
	}
	if len(paths) != 1 || paths[0] != "factories[1].password" || !strings.Contains(err.Error(), "40 characters") {
		t.Fatalf("problems at %v: %v; want only factories[1].password", paths, err)
	}
	if strings.Contains(err.Error(), hash[10:40]) {
		t.Fatalf("the problem shows the hash: %v", err)
	}
}

// TestBcryptPasswordYAML decodes a hub's embedded-server block as the documentation shows
// it: a hash written literally (single-quoted) and one read from the environment.
func TestBcryptPasswordYAML(t *testing.T) {
	t.Setenv("NATS_FACTORY_B_HASH", "$2a$10$rS5qojke0XjKQLgLixQCdOCG.pH3ulFJhqVeBGUk34dj0ue8NMCCu")
	doc := `
listen: 127.0.0.1:4222
factories:
  - {name: factory-a, password: '$2a$10$rS5qojke0XjKQLgLixQCdOCG.pH3ulFJhqVeBGUk34dj0ue8NMCCu', federations: [pumps]}
  - {name: factory-b, password: "env:NATS_FACTORY_B_HASH", federations: [pumps]}
`
	var cfg ServerConfig
	if err := config.Decode([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, f := range cfg.Factories {
		if !IsBcrypt(f.Password.Value()) || bcrypt.CompareHashAndPassword([]byte(f.Password.Value()), []byte("example-password")) != nil {
			t.Errorf("%s: password %q is not the hash of example-password", f.Name, f.Password.Value())
		}
	}
}

// TestSlowHandshakeIsNotPingedFirst connects a client that takes 2.6 s between its CONNECT
// and the PING that ends its handshake, as a factory whose bcrypt hash a busy hub is still
// checking does: the first line it reads must be the PONG to its PING. The server's usual
// first PING after 2-2.4 s would come first, and a NATS client that reads it in place of the
// PONG gives up the connection ("expected 'PONG', got 'PING'").
func TestSlowHandshakeIsNotPingedFirst(t *testing.T) {
	t.Parallel()
	srv, _ := serve(t, ServerConfig{Listen: freeAddr(t), StoreDir: t.TempDir(), Factories: []Factory{
		{Name: "a", Password: config.NewSecret("pa"), Federations: []string{"f1"}},
	}}, slog.New(slog.DiscardHandler))
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if info, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(info, "INFO ") {
		t.Fatalf("server greeting %q, %v", info, err)
	}
	if _, err := conn.Write([]byte(`CONNECT {"verbose":false,"pedantic":false,"user":"a","pass":"pa","protocol":1}` + "\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2600 * time.Millisecond)
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "PONG\r\n" {
		t.Fatalf("first line after the handshake's PING: %q, %v; want PONG", line, err)
	}
}
