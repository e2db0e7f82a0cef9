package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
)

// Secret is a credential from the configuration. In YAML it is written as a reference,
// "env:NAME" (an environment variable) or "file:/path" (a file's contents, trailing newline
// removed), or, discouraged, as the literal value. It is resolved when decoded, and it
// redacts itself wherever it is printed or logged.
type Secret struct {
	ref   string
	value string
}

// NewSecret returns a secret holding value, for code and tests.
func NewSecret(value string) Secret { return Secret{ref: "literal", value: value} }

// DecodeScalar implements ScalarDecoder.
func (s *Secret) DecodeScalar(text string) error {
	switch {
	case strings.HasPrefix(text, "env:"):
		name := strings.TrimPrefix(text, "env:")
		v, ok := os.LookupEnv(name)
		if !ok {
			return fmt.Errorf("environment variable %s named by %q is not set", name, text)
		}
		*s = Secret{ref: text, value: v}
	case strings.HasPrefix(text, "file:"):
		path := strings.TrimPrefix(text, "file:")
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("cannot read the secret file named by %q: %v", text, err)
		}
		*s = Secret{ref: text, value: strings.TrimRight(string(b), "\r\n")}
	default:
		*s = Secret{ref: "literal", value: text}
	}
	return nil
}

// Value returns the secret itself, for handing to a client library.
func (s Secret) Value() string { return s.value }

// IsSet reports whether a value was configured.
func (s Secret) IsSet() bool { return s.ref != "" }

// String redacts the value.
func (s Secret) String() string {
	if s.ref == "" {
		return ""
	}
	if s.ref == "literal" {
		return "[redacted]"
	}
	return "[redacted " + s.ref + "]"
}

// LogValue redacts the value in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText redacts the value in JSON and YAML output.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// GoString redacts the value in %#v output.
func (s Secret) GoString() string { return s.String() }

// Format redacts the value under every fmt verb, including those not meant for a Secret
// (%d, %t, %f), which would otherwise print its fields.
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		io.WriteString(f, s.GoString())
	case verb == 'v' || verb == 's' || verb == 'q' || verb == 'x' || verb == 'X':
		fmt.Fprintf(f, fmt.FormatString(f, verb), s.String())
	default:
		io.WriteString(f, s.String())
	}
}

// ByteSize is a size in bytes, written in YAML as a number with an optional unit:
// 1048576, 512KiB, 64MiB, 1GiB, 10MB, 2GB.
type ByteSize int64

// DecodeScalar implements ScalarDecoder.
func (b *ByteSize) DecodeScalar(text string) error {
	v, err := ParseByteSize(text)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// ParseByteSize parses the forms ByteSize accepts.
func ParseByteSize(text string) (ByteSize, error) {
	s := strings.TrimSpace(text)
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size; expected a non-negative whole number with an optional unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", text)
	}
	return ByteSize(n * mult), nil
}

// String formats the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// TLS configures a TLS client connection. An empty TLS (no files, no options) with Enabled
// false means plain TCP.
type TLS struct {
	// Enabled turns TLS on even when no file is given (system roots, no client cert).
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of CAs that sign the server certificate; the system roots when empty.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate and key for mutual TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked against the server certificate.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables server certificate checks. For lab use only; it is logged.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Active reports whether TLS is to be used.
func (t TLS) Active() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.InsecureSkipVerify || t.ServerName != ""
}

// Validate checks the combination of fields (not the files: they are read by Load).
func (t TLS) Validate() error {
	var p Problems
	checkPair(&p, t.CertFile, t.KeyFile)
	return p.Err()
}

// checkPair reports a certificate without its key, or a key without its certificate.
func checkPair(p *Problems, cert, key string) {
	if (cert == "") != (key == "") {
		p.Addf("cert_file", "cert_file and key_file must be given together (got cert_file %q, key_file %q)", cert, key)
	}
}

// Load reads the files and returns the crypto/tls configuration, or nil when TLS is off.
func (t TLS) Load() (*tls.Config, error) {
	if !t.Active() {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // opt-in, logged by the caller
	if t.CAFile != "" {
		pool, err := loadPool("tls ca_file", t.CAFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls cert_file/key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// loadPool reads a PEM bundle of certificates (the setting named what).
func loadPool(what, file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s: no PEM certificate found", what, file)
	}
	return pool, nil
}

// ServerTLS configures a TLS server (an HTTP API). Without a certificate the server speaks
// plain TCP.
type ServerTLS struct {
	// CertFile and KeyFile are the server's certificate (chain) and key, PEM.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, requires every client to present a certificate signed by one
	// of these CAs (mutual TLS).
	ClientCAFile string `yaml:"client_ca_file"`
}

// Active reports whether TLS is to be used.
func (t ServerTLS) Active() bool { return t.CertFile != "" }

// Validate checks the combination of fields (not the files: they are read by Load).
func (t ServerTLS) Validate() error {
	var p Problems
	checkPair(&p, t.CertFile, t.KeyFile)
	if t.ClientCAFile != "" && t.CertFile == "" {
		p.Addf("client_ca_file", "client certificate verification needs cert_file and key_file")
	}
	return p.Err()
}

// Load reads the files and returns the crypto/tls configuration, or nil when TLS is off.
func (t ServerTLS) Load() (*tls.Config, error) {
	if !t.Active() {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls cert_file/key_file: %w", err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if t.ClientCAFile != "" {
		if c.ClientCAs, err = loadPool("tls client_ca_file", t.ClientCAFile); err != nil {
			return nil, err
		}
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}
