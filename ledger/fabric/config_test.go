package fabric

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/internal/servicetest"
)

var getenv = os.Getenv

// TestMain fails the run if a test leaves a goroutine behind (a Watch, an outbox, a gRPC
// connection not closed).
func TestMain(m *testing.M) { os.Exit(servicetest.RunWithLeakCheck(m)) }

func TestSampleConfig(t *testing.T) {
	b, err := os.ReadFile("testdata/fabric.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.MSPID != "factory-a" || c.Endpoint != "127.0.0.1:17151" || c.CommitStatusTimeout.Minutes() != 1 {
		t.Fatalf("sample config decoded to %+v", c)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string // every path the error must name
	}{
		{"empty", "{}", []string{"endpoint", "tls_ca", "msp_id", "cert", "key"}},
		{"bad values", "endpoint: nowhere\nchannel: Upper\nchaincode: 'a b'\nevaluate_timeout: -1s\ntls_ca: a\nmsp_id: m\ncert: c\nkey: k\n",
			[]string{"endpoint", "channel", "chaincode", "evaluate_timeout"}},
		{"unknown key", "endpoint: 127.0.0.1:1\nendpont: x\n", []string{"endpont"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig([]byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestConfigFromEnvFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	env := `# comment
export MILLWRIGHT_FABRIC=1
export MILLWRIGHT_FABRIC_CHANNEL=millwright
export MILLWRIGHT_FABRIC_ORGS="factory-a auditor"
export MILLWRIGHT_FABRIC_AUDITOR_MSP_ID=auditor
export MILLWRIGHT_FABRIC_AUDITOR_PEER_ENDPOINT=127.0.0.1:17151
export MILLWRIGHT_FABRIC_AUDITOR_PEER_HOST_ALIAS=peer0.factory-a.millwright.local
export MILLWRIGHT_FABRIC_AUDITOR_TLS_CA=/ca.crt
export MILLWRIGHT_FABRIC_AUDITOR_CERT=/cert.pem
export MILLWRIGHT_FABRIC_AUDITOR_KEY=/priv_sk
`
	if err := os.WriteFile(path, []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := ParseEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if m["MILLWRIGHT_FABRIC_ORGS"] != "factory-a auditor" {
		t.Fatalf("quoted value = %q", m["MILLWRIGHT_FABRIC_ORGS"])
	}
	c, err := ConfigFromEnv("auditor", func(k string) string { return m[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.MSPID != "auditor" || c.ServerName != "peer0.factory-a.millwright.local" || c.Chaincode != "lineage" {
		t.Fatalf("config %+v", c)
	}
	if _, err := ConfigFromEnv("oem", func(k string) string { return m[k] }); err == nil || !strings.Contains(err.Error(), "MILLWRIGHT_FABRIC_OEM_") {
		t.Fatalf("missing organisation: %v", err)
	}
	if err := os.WriteFile(path, []byte("not a variable\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseEnvFile(path); err == nil {
		t.Fatal("a line without = was accepted")
	}
}

func FuzzParseEnvFile(f *testing.F) {
	f.Add([]byte("export A=1\n# c\nB=\"x y\"\n"))
	f.Add([]byte("=\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "env")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := ParseEnvFile(path)
		if err != nil {
			return
		}
		for k := range m {
			if k == "" || strings.ContainsAny(k, " \t\"'") {
				t.Fatalf("accepted name %q", k)
			}
		}
	})
}
