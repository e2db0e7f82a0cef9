package opcua

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/millwright-io/millwright/internal/atomicfile"
)

// Files and directories below the PKI directory.
const (
	ownCertFile = "own/cert.pem"
	ownKeyFile  = "own/key.pem"
	trustedDir  = "trusted"
	rejectedDir = "rejected"
	certRSABits = 2048
	certValid   = 10 * 365 * 24 * time.Hour
)

// appCert is the client's application certificate (DER) and key.
type appCert struct {
	der []byte
	key *rsa.PrivateKey
}

// loadOrCreateAppCert returns the application certificate in dir, creating it (RSA 2048,
// PKCS#1 key, appURI in the SAN) when it does not exist or names another application URI.
func loadOrCreateAppCert(dir, appURI, host string) (appCert, bool, error) {
	certPath, keyPath := filepath.Join(dir, ownCertFile), filepath.Join(dir, ownKeyFile)
	c, err := loadAppCert(certPath, keyPath)
	switch {
	case err == nil && certHasURI(c.der, appURI):
		return c, false, nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return appCert{}, false, err
	}
	c, err = newAppCert(appURI, host)
	if err != nil {
		return appCert{}, false, err
	}
	if err := os.MkdirAll(filepath.Dir(certPath), 0o700); err != nil {
		return appCert{}, false, fmt.Errorf("create %s: %w", filepath.Dir(certPath), err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(c.key)})
	if err := atomicfile.WriteFile(keyPath, keyPEM, 0o600, true); err != nil {
		return appCert{}, false, fmt.Errorf("write %s: %w", keyPath, err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.der})
	if err := atomicfile.WriteFile(certPath, certPEM, 0o644, true); err != nil {
		return appCert{}, false, fmt.Errorf("write %s: %w", certPath, err)
	}
	return c, true, nil
}

// loadAppCert reads a certificate (PEM or DER) and an RSA key (PEM, PKCS#1 or PKCS#8).
func loadAppCert(certPath, keyPath string) (appCert, error) {
	certData, err := os.ReadFile(certPath)
	if err != nil {
		return appCert{}, err
	}
	keyData, err := os.ReadFile(keyPath)
	if err != nil {
		return appCert{}, err
	}
	der := certData
	if b, _ := pem.Decode(certData); b != nil {
		der = b.Bytes
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return appCert{}, fmt.Errorf("certificate %s: %w", certPath, err)
	}
	key, err := parseRSAKey(keyData)
	if err != nil {
		return appCert{}, fmt.Errorf("key %s: %w", keyPath, err)
	}
	return appCert{der: der, key: key}, nil
}

func parseRSAKey(data []byte) (*rsa.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("not PEM")
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("neither a PKCS#1 nor a PKCS#8 key: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T key; OPC-UA needs RSA", k)
	}
	return rk, nil
}

func newAppCert(appURI, host string) (appCert, error) {
	key, err := rsa.GenerateKey(rand.Reader, certRSABits)
	if err != nil {
		return appCert{}, fmt.Errorf("generate key: %w", err)
	}
	uri, err := url.Parse(appURI)
	if err != nil {
		return appCert{}, fmt.Errorf("application uri %q: %w", appURI, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return appCert{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "millwright", Organization: []string{"Millwright"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValid),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
		DNSNames:              []string{host},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return appCert{}, fmt.Errorf("create certificate: %w", err)
	}
	return appCert{der: der, key: key}, nil
}

func certHasURI(der []byte, uri string) bool {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return false
	}
	for _, u := range c.URIs {
		if u.String() == uri {
			return true
		}
	}
	return false
}

// thumbprint names a certificate in the trust list: the hex SHA-256 of its DER.
func thumbprint(der []byte) string {
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:])
}

// RejectedError reports a server certificate the trust list refused.
type RejectedError struct {
	Thumbprint string
	Subject    string
	Reason     string
	// Path is where the certificate was written (in rejected/); moving it to trusted/ accepts it.
	Path string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("server certificate %q (sha256 %s) rejected: %s; written to %s, move it to %s to trust it",
		e.Subject, e.Thumbprint, e.Reason, e.Path, filepath.Join(filepath.Dir(filepath.Dir(e.Path)), trustedDir))
}

// trustResult says how a certificate was accepted.
type trustResult int

const (
	trustedListed trustResult = iota // found in trusted/
	trustedPinned                    // trust on first use: written to trusted/ now
)

// checkServerCert accepts der when trusted/ holds the same certificate, or, with tofu and
// an empty trusted/, pins it there. Otherwise it writes der to rejected/ and returns a
// *RejectedError with the reason.
func checkServerCert(dir string, der []byte, tofu bool, now time.Time) (trustResult, error) {
	tp := thumbprint(der)
	cert, perr := x509.ParseCertificate(der)
	subject := "unparsable"
	if perr == nil {
		subject = cert.Subject.String()
	}
	reject := func(reason string) (trustResult, error) {
		rdir := filepath.Join(dir, rejectedDir)
		path := filepath.Join(rdir, tp+".der")
		if err := os.MkdirAll(rdir, 0o700); err == nil {
			_ = atomicfile.WriteFile(path, der, 0o644, false)
		}
		return 0, &RejectedError{Thumbprint: tp, Subject: subject, Reason: reason, Path: path}
	}
	switch {
	case len(der) == 0:
		return reject("the server sent no certificate")
	case perr != nil:
		return reject("not an X.509 certificate: " + perr.Error())
	case now.Before(cert.NotBefore):
		return reject(fmt.Sprintf("not valid before %s", cert.NotBefore.UTC().Format(time.RFC3339)))
	case now.After(cert.NotAfter):
		return reject(fmt.Sprintf("expired on %s", cert.NotAfter.UTC().Format(time.RFC3339)))
	}
	tdir := filepath.Join(dir, trustedDir)
	entries, err := os.ReadDir(tdir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("read trust list: %w", err)
	}
	listed := 0
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), atomicfile.TempPrefix) {
			continue
		}
		listed++
		data, err := os.ReadFile(filepath.Join(tdir, e.Name()))
		if err != nil {
			continue
		}
		if b, _ := pem.Decode(data); b != nil {
			data = b.Bytes
		}
		if bytes.Equal(data, der) {
			return trustedListed, nil
		}
	}
	if tofu && listed == 0 {
		if err := os.MkdirAll(tdir, 0o700); err != nil {
			return 0, fmt.Errorf("create trust list: %w", err)
		}
		if err := atomicfile.WriteFile(filepath.Join(tdir, tp+".der"), der, 0o644, true); err != nil {
			return 0, fmt.Errorf("pin server certificate: %w", err)
		}
		return trustedPinned, nil
	}
	if tofu {
		return reject(fmt.Sprintf("not in the trust list %s, which already holds %d certificate(s) (trust on first use pins only the first)", tdir, listed))
	}
	return reject(fmt.Sprintf("not in the trust list %s", tdir))
}
