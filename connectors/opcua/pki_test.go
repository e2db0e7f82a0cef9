package opcua

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
)

func TestAppCertGeneratedAndReused(t *testing.T) {
	dir := t.TempDir()
	const uri = "urn:millwright:test-host:plc"
	c1, created, err := loadOrCreateAppCert(dir, uri, "test-host")
	if err != nil || !created {
		t.Fatalf("first call: created %v, err %v", created, err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, ownKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil || b.Type != "RSA PRIVATE KEY" {
		t.Fatalf("key file is not PKCS#1 PEM: %q", keyPEM[:min(40, len(keyPEM))])
	}
	if _, err := x509.ParsePKCS1PrivateKey(b.Bytes); err != nil {
		t.Fatalf("key is not PKCS#1: %v", err)
	}
	if c1.key.N.BitLen() != 2048 {
		t.Errorf("key has %d bits, want 2048", c1.key.N.BitLen())
	}
	cert, err := x509.ParseCertificate(c1.der)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != uri {
		t.Errorf("certificate URIs = %v, want [%s]", cert.URIs, uri)
	}
	c2, created, err := loadOrCreateAppCert(dir, uri, "test-host")
	if err != nil || created || !bytes.Equal(c1.der, c2.der) {
		t.Errorf("second call: created %v, err %v, same cert %v; want the stored one reused", created, err, bytes.Equal(c1.der, c2.der))
	}
	c3, created, err := loadOrCreateAppCert(dir, "urn:other", "test-host")
	if err != nil || !created || bytes.Equal(c1.der, c3.der) {
		t.Errorf("another URI: created %v, err %v; want a new certificate", created, err)
	}
}

func TestTrustList(t *testing.T) {
	server, _, err := loadOrCreateAppCert(t.TempDir(), "urn:server", "server")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := loadOrCreateAppCert(t.TempDir(), "urn:other", "other")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()

	t.Run("unknown is rejected and written", func(t *testing.T) {
		dir := t.TempDir()
		_, err := checkServerCert(dir, server.der, false, now)
		var rej *RejectedError
		if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "not in the trust list") {
			t.Fatalf("err = %v, want a rejection", err)
		}
		data, rerr := os.ReadFile(rej.Path)
		if rerr != nil || !bytes.Equal(data, server.der) || filepath.Dir(rej.Path) != filepath.Join(dir, rejectedDir) {
			t.Errorf("rejected cert at %s: %v", rej.Path, rerr)
		}
		// Moving it to trusted/ accepts it.
		if err := os.MkdirAll(filepath.Join(dir, trustedDir), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(rej.Path, filepath.Join(dir, trustedDir, "server.der")); err != nil {
			t.Fatal(err)
		}
		if res, err := checkServerCert(dir, server.der, false, now); err != nil || res != trustedListed {
			t.Errorf("after trusting: %v, %v", res, err)
		}
	})
	t.Run("trust on first use pins the first only", func(t *testing.T) {
		dir := t.TempDir()
		if res, err := checkServerCert(dir, server.der, true, now); err != nil || res != trustedPinned {
			t.Fatalf("first use: %v, %v; want pinned", res, err)
		}
		if res, err := checkServerCert(dir, server.der, true, now); err != nil || res != trustedListed {
			t.Errorf("second use: %v, %v; want listed", res, err)
		}
		_, err := checkServerCert(dir, other.der, true, now)
		var rej *RejectedError
		if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "pins only the first") {
			t.Errorf("another certificate: %v, want rejected", err)
		}
	})
	t.Run("expired is rejected even when listed", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := checkServerCert(dir, server.der, true, now); err != nil {
			t.Fatal(err)
		}
		_, err := checkServerCert(dir, server.der, true, now.Add(20*365*24*time.Hour))
		var rej *RejectedError
		if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "expired") {
			t.Errorf("err = %v, want expired", err)
		}
	})
}

func TestSelectEndpoint(t *testing.T) {
	anon := &ua.UserTokenPolicy{PolicyID: "anon", TokenType: ua.UserTokenTypeAnonymous}
	user := &ua.UserTokenPolicy{PolicyID: "user", TokenType: ua.UserTokenTypeUserName}
	eps := []*ua.EndpointDescription{
		{SecurityPolicyURI: ua.SecurityPolicyURINone, SecurityMode: ua.MessageSecurityModeNone, UserIdentityTokens: []*ua.UserTokenPolicy{anon}},
		{SecurityPolicyURI: ua.SecurityPolicyURIBasic256Sha256, SecurityMode: ua.MessageSecurityModeSign, SecurityLevel: 1, UserIdentityTokens: []*ua.UserTokenPolicy{anon, user}},
		{SecurityPolicyURI: ua.SecurityPolicyURIBasic256Sha256, SecurityMode: ua.MessageSecurityModeSign, SecurityLevel: 5, UserIdentityTokens: []*ua.UserTokenPolicy{user}},
	}
	ep, err := selectEndpoint(eps, ua.SecurityPolicyURIBasic256Sha256, ua.MessageSecurityModeSign, ua.UserTokenTypeUserName)
	if err != nil || ep.SecurityLevel != 5 {
		t.Errorf("got %+v, %v; want the level-5 endpoint", ep, err)
	}
	_, err = selectEndpoint(eps, ua.SecurityPolicyURIAes256Sha256RsaPss, ua.MessageSecurityModeSignAndEncrypt, ua.UserTokenTypeAnonymous)
	want := "no endpoint with security Aes256_Sha256_RsaPss/SignAndEncrypt; the server offers: Basic256Sha256/Sign (anonymous, username); Basic256Sha256/Sign (username); None/None (anonymous)"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
	_, err = selectEndpoint(eps, ua.SecurityPolicyURINone, ua.MessageSecurityModeNone, ua.UserTokenTypeCertificate)
	if err == nil || !strings.Contains(err.Error(), "accepts certificate authentication") {
		t.Errorf("err = %v, want the authentication named", err)
	}
}

func TestEndpointMismatchAgainstServer(t *testing.T) {
	u := startUnitServer(t)
	cfg := unitConfig(t, u)
	cfg.SecurityPolicy = "Basic256Sha256"
	cfg.Nodes = []Node{{NodeID: "ns=1;s=A", Machine: "m", Signal: "s"}}
	s, err := New("unit", cfg, unitEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Connect(t.Context())
	if err == nil {
		_ = s.Close(t.Context())
		t.Fatal("connected to a None-only server with Basic256Sha256")
	}
	if !strings.Contains(err.Error(), "the server offers: None/None (anonymous)") {
		t.Errorf("err = %v", err)
	}
	// The application certificate was created on this first start.
	if _, err := os.Stat(filepath.Join(s.PKIDir(), ownCertFile)); err != nil {
		t.Errorf("no application certificate: %v", err)
	}
}

// TestSelectEndpointNeverSendsPasswordInClear: a UserName token policy whose security
// policy is None (its own, or the endpoint's when it names none) makes the client send the
// password unencrypted (Part 4, 7.41.4). On a channel that does not encrypt, such a policy
// is never chosen: a server, or anyone who rewrites its unauthenticated GetEndpoints
// answer, cannot make the source disclose the password. An encrypting token policy of the
// same endpoint is chosen even when a plaintext one comes first.
func TestSelectEndpointNeverSendsPasswordInClear(t *testing.T) {
	clearUser := &ua.UserTokenPolicy{PolicyID: "user_clear", TokenType: ua.UserTokenTypeUserName, SecurityPolicyURI: ua.SecurityPolicyURINone}
	inherit := &ua.UserTokenPolicy{PolicyID: "user_inherit", TokenType: ua.UserTokenTypeUserName}
	rsa := &ua.UserTokenPolicy{PolicyID: "user_rsa", TokenType: ua.UserTokenTypeUserName, SecurityPolicyURI: ua.SecurityPolicyURIBasic256Sha256}
	anon := &ua.UserTokenPolicy{PolicyID: "anon", TokenType: ua.UserTokenTypeAnonymous}
	ep := func(policy string, mode ua.MessageSecurityMode, toks ...*ua.UserTokenPolicy) *ua.EndpointDescription {
		return &ua.EndpointDescription{SecurityPolicyURI: policy, SecurityMode: mode, UserIdentityTokens: toks}
	}
	none, sign, enc := ua.MessageSecurityModeNone, ua.MessageSecurityModeSign, ua.MessageSecurityModeSignAndEncrypt
	b256 := ua.SecurityPolicyURIBasic256Sha256
	tests := []struct {
		name   string
		ep     *ua.EndpointDescription
		token  ua.UserTokenType
		want   string // policy id chosen, or "" for an error
		errHas string
	}{
		{"sign, token None", ep(b256, sign, clearUser), ua.UserTokenTypeUserName, "", "clear text"},
		{"sign, token None first, then one that encrypts", ep(b256, sign, clearUser, inherit), ua.UserTokenTypeUserName, "user_inherit", ""},
		{"sign, token inherits the channel's policy", ep(b256, sign, inherit), ua.UserTokenTypeUserName, "user_inherit", ""},
		{"sign and encrypt, token None", ep(b256, enc, clearUser), ua.UserTokenTypeUserName, "user_clear", ""},
		{"channel None, token inherits None", ep(ua.SecurityPolicyURINone, none, inherit), ua.UserTokenTypeUserName, "", "clear text"},
		{"channel None, token None first, then Basic256Sha256", ep(ua.SecurityPolicyURINone, none, clearUser, rsa), ua.UserTokenTypeUserName, "user_rsa", ""},
		{"anonymous on channel None", ep(ua.SecurityPolicyURINone, none, clearUser, anon), ua.UserTokenTypeAnonymous, "anon", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := selectEndpoint([]*ua.EndpointDescription{tt.ep}, tt.ep.SecurityPolicyURI, tt.ep.SecurityMode, tt.token)
			if tt.want == "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("got %+v, %v; want an error containing %q", got, err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got.UserIdentityTokens) != 1 || got.UserIdentityTokens[0].PolicyID != tt.want {
				t.Errorf("token policies offered to the client %+v; want only %q", got.UserIdentityTokens, tt.want)
			}
			if len(tt.ep.UserIdentityTokens) == 0 || tt.ep.UserIdentityTokens[0] == nil {
				t.Fatal("the server's endpoint was modified")
			}
		})
	}
}
