package servicetest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Influxd is a private InfluxDB 1.8 instance for one test, which the test may stop and start
// again (its data survives). The binary is $MILLWRIGHT_INFLUXD, installed by
// deploy/services.sh.
type Influxd struct {
	t    testing.TB
	bin  string
	dir  string
	conf string
	URL  string
	cmd  *exec.Cmd
}

// StartInfluxd starts a private influxd on free ports with its data in a temporary
// directory, creates database db, and stops it when the test ends.
func StartInfluxd(t testing.TB, db string) *Influxd {
	t.Helper()
	bin := os.Getenv("MILLWRIGHT_INFLUXD")
	if bin == "" {
		t.Skip("needs MILLWRIGHT_INFLUXD, the influxd binary deploy/services.sh installs (make test sets it)")
	}
	dir := t.TempDir()
	httpPort, rpcPort := FreePort(t), FreePort(t)
	conf := filepath.Join(dir, "influxdb.conf")
	err := os.WriteFile(conf, fmt.Appendf(nil, `reporting-disabled = true
bind-address = "127.0.0.1:%d"
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:%d"
  flux-enabled = true
  log-enabled = false
`, rpcPort, filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), httpPort), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	d := &Influxd{t: t, bin: bin, dir: dir, conf: conf, URL: fmt.Sprintf("http://127.0.0.1:%d", httpPort)}
	d.Start()
	t.Cleanup(d.Stop)
	if _, err := InfluxQL(d.URL, "", "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	return d
}

// Start starts the instance (again) and waits until it answers /ping.
func (d *Influxd) Start() {
	d.t.Helper()
	if d.cmd != nil {
		return
	}
	log, err := os.OpenFile(filepath.Join(d.dir, "influxd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		d.t.Fatal(err)
	}
	cmd := exec.Command(d.bin, "run", "-config", d.conf)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	log.Close()
	d.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(d.URL + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(d.dir, "influxd.log"))
			d.t.Fatalf("private influxd did not start: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the instance (SIGKILL: an outage, not a clean shutdown) and waits for it.
func (d *Influxd) Stop() {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Kill()
	_ = d.cmd.Wait()
	d.cmd = nil
}
