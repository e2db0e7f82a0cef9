package mqtt

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/testpki"
)

// Integration tests of TLS and password authentication against the two listeners that
// deploy/services.sh starts next to the anonymous one: mutual TLS (MILLWRIGHT_MQTT_TLS_URL,
// which requires a client certificate of the test CA) and username and password
// (MILLWRIGHT_MQTT_AUTH_URL, which refuses anonymous clients).

// secureBroker holds where the secured listeners are and the credentials they accept.
type secureBroker struct {
	tlsURL, caFile, certFile, keyFile string
	authURL, user, passwordFile       string
}

// secureBrokerEnv reads the secured listeners from the environment that .services/env sets,
// skipping the test when they are not there.
func secureBrokerEnv(t *testing.T) secureBroker {
	t.Helper()
	brokerURL(t) // skips without MILLWRIGHT_INTEGRATION
	var b secureBroker
	var missing []string
	for _, v := range []struct {
		name string
		dst  *string
	}{
		{"MILLWRIGHT_MQTT_TLS_URL", &b.tlsURL},
		{"MILLWRIGHT_MQTT_CA", &b.caFile},
		{"MILLWRIGHT_MQTT_CLIENT_CERT", &b.certFile},
		{"MILLWRIGHT_MQTT_CLIENT_KEY", &b.keyFile},
		{"MILLWRIGHT_MQTT_AUTH_URL", &b.authURL},
		{"MILLWRIGHT_MQTT_USER", &b.user},
		{"MILLWRIGHT_MQTT_PASSWORD_FILE", &b.passwordFile},
	} {
		*v.dst = os.Getenv(v.name)
		if *v.dst == "" {
			missing = append(missing, v.name)
		}
	}
	if len(missing) > 0 {
		t.Skipf("%s not set: Mosquitto's TLS and password listeners are unknown; run deploy/services.sh up (it starts them) and source .services/env",
			strings.Join(missing, ", "))
	}
	return b
}

// mutualTLS is the TLS configuration the TLS listener accepts.
func (b secureBroker) mutualTLS() config.TLS {
	return config.TLS{CAFile: b.caFile, CertFile: b.certFile, KeyFile: b.keyFile}
}

// password reads the password as the YAML decoder does for "password: file:<path>".
func (b secureBroker) password(t *testing.T) config.Secret {
	t.Helper()
	var s config.Secret
	if err := s.DecodeScalar("file:" + b.passwordFile); err != nil {
		t.Fatal(err)
	}
	if s.Value() == "" {
		t.Fatalf("the password file %s is empty", b.passwordFile)
	}
	return s
}

// publishQoS1 publishes every payload to topic at QoS 1 with the package's Publisher and
// waits until the broker has acknowledged each one.
func publishQoS1(t *testing.T, cfg PublisherConfig, topic string, payloads []string) {
	t.Helper()
	cfg.ClientID, cfg.QoS = uniq(t)+"-pub", 1
	p, err := NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := p.Connect(ctx); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	defer p.Close()
	var mu sync.Mutex
	var errs []error
	for _, pl := range payloads {
		err := p.Publish(ctx, topic, []byte(pl), func(err error) {
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
		if err != nil {
			t.Fatalf("publish to %s: %v", topic, err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("publisher flush: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
}

// deliverQoS1 connects a source with cfg, publishes n QoS 1 messages to it with pub and
// checks that each arrives exactly once.
func deliverQoS1(t *testing.T, cfg Config, pub PublisherConfig) {
	t.Helper()
	prefix := uniq(t)
	cfg.ClientID, cfg.CleanSession = prefix, true
	cfg.Topics = []Topic{{Pattern: prefix + "/{machine}", QoS: 1, Signal: "v"}}
	s := startSource(t, cfg)
	const n = 200
	publishQoS1(t, pub, prefix+"/m1", numbered(n, "%d"))
	checkSeq(t, values(readPoints(t, s.Source, n, true)), n)
	expectNothing(t, s.Source)
	if got := testutil.ToFloat64(s.m.connects); got != 1 {
		t.Errorf("connects_total = %v, want 1", got)
	}
}

// connectFails checks that a source built from cfg cannot connect, that the failed Connect
// leaves it unconnected, and returns the Connect error.
func connectFails(t *testing.T, cfg Config) error {
	t.Helper()
	cfg.ClientID, cfg.CleanSession, cfg.ConnectTimeout = uniq(t), true, 5*time.Second
	cfg.Topics = []Topic{{Pattern: uniq(t) + "/{machine}", QoS: 1, Signal: "v"}}
	s, err := New("it", cfg, testEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err = s.Connect(ctx)
	if err == nil {
		_ = s.Close(ctx)
		t.Fatal("Connect succeeded")
	}
	t.Logf("Connect: %v", err)
	if _, _, rerr := s.Read(ctx); !errors.Is(rerr, connectors.ErrNotConnected) {
		t.Errorf("Read after a failed Connect = %v, want ErrNotConnected", rerr)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return err
}

func wantErrorContaining(t *testing.T, err error, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Connect error %q does not contain %q", err, w)
		}
	}
}

func TestIntegrationMutualTLS(t *testing.T) {
	b := secureBrokerEnv(t)
	t.Parallel()
	tests := []struct {
		name       string
		serverName string
	}{
		{"server checked by ip", ""}, // the URL's 127.0.0.1 against the certificate's IP SAN
		{"server_name localhost", "localhost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tlsCfg := b.mutualTLS()
			tlsCfg.ServerName = tt.serverName
			deliverQoS1(t, Config{Servers: []string{b.tlsURL}, TLS: tlsCfg},
				PublisherConfig{Server: b.tlsURL, TLS: b.mutualTLS()})
		})
	}
}

func TestIntegrationTLSRefused(t *testing.T) {
	b := secureBrokerEnv(t)
	t.Parallel()
	other := testpki.New(t, "Millwright test: an unknown CA")
	url := b.tlsURL
	isUnknownAuthority := func(err error) bool { return errors.As(err, new(x509.UnknownAuthorityError)) }
	isHostname := func(err error) bool { return errors.As(err, new(x509.HostnameError)) }
	tests := []struct {
		name string
		tls  config.TLS
		want []string
		is   func(error) bool // the error the broker's certificate check returned, when ours refused
	}{
		// The broker refuses: its TLS alert says why.
		{"no client certificate", config.TLS{CAFile: b.caFile},
			[]string{"remote error: tls: certificate required"}, nil},
		{"client certificate of another CA", config.TLS{CAFile: b.caFile, CertFile: other.CertFile, KeyFile: other.KeyFile},
			[]string{"remote error: tls: unknown certificate authority"}, nil},
		// The source refuses the broker's certificate.
		{"server certificate of an unknown CA", config.TLS{CAFile: other.CAFile, CertFile: b.certFile, KeyFile: b.keyFile},
			[]string{"tls: failed to verify certificate: x509: certificate signed by unknown authority"}, isUnknownAuthority},
		{"server_name mismatch", config.TLS{CAFile: b.caFile, CertFile: b.certFile, KeyFile: b.keyFile, ServerName: "broker.invalid"},
			[]string{"tls: failed to verify certificate: x509: certificate is valid for localhost, not broker.invalid"}, isHostname},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := connectFails(t, Config{Servers: []string{url}, TLS: tt.tls})
			wantErrorContaining(t, err, append([]string{`mqtt source "it": connect to ` + url + ` as client id "`}, tt.want...)...)
			if tt.is != nil && !tt.is(err) {
				t.Errorf("Connect error %q does not wrap the certificate check's error", err)
			}
		})
	}
}

func TestIntegrationPassword(t *testing.T) {
	b := secureBrokerEnv(t)
	t.Parallel()
	pw := b.password(t)
	deliverQoS1(t, Config{Servers: []string{b.authURL}, Username: b.user, Password: pw},
		PublisherConfig{Server: b.authURL, Username: b.user, Password: pw})
}

func TestIntegrationPasswordRefused(t *testing.T) {
	b := secureBrokerEnv(t)
	t.Parallel()
	url := b.authURL
	pw := b.password(t)
	wrong := config.NewSecret("not-" + pw.Value())
	tests := []struct {
		name string
		user string
		pw   config.Secret
		hint string
	}{
		{"wrong password", b.user, wrong, `the broker refused username "` + b.user + `" with the configured password: check username and password`},
		{"unknown user", "nobody-" + b.user, pw, `the broker refused username "nobody-` + b.user + `" with the configured password`},
		{"anonymous", "", config.Secret{}, "the broker refused a client without a username: set username and password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := connectFails(t, Config{Servers: []string{url}, Username: tt.user, Password: tt.pw})
			wantErrorContaining(t, err, `mqtt source "it": connect to `+url+` as client id "`, tt.hint)
			// Mosquitto 2 answers MQTT 3.1.1 with return code 5, other brokers with 4.
			if !errors.Is(err, packets.ErrorRefusedNotAuthorised) && !errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
				t.Errorf("Connect error %q is not paho's %q or %q", err, packets.ErrorRefusedNotAuthorised, packets.ErrorRefusedBadUsernameOrPassword)
			}
			if msg := strings.ToLower(err.Error()); !strings.Contains(msg, "not authorized") && !strings.Contains(msg, "bad user name or password") {
				t.Errorf("Connect error %q says neither not authorized nor bad user name or password", err)
			}
			for _, secret := range []config.Secret{pw, wrong} {
				if strings.Contains(err.Error(), secret.Value()) {
					t.Errorf("Connect error %q shows a password", err)
				}
			}
		})
	}
}
