package servicetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// OPCUAURL is the node-opcua server started by deploy/services.sh.
func OPCUAURL() string { return env("MILLWRIGHT_OPCUA_URL", "opc.tcp://127.0.0.1:4840") }

// OPCUAUser and OPCUAPassword are the one user that server accepts with a password.
func OPCUAUser() string { return env("MILLWRIGHT_OPCUA_USER", "millwright") }

// OPCUAPassword is OPCUAUser's password (see OPCUAUser).
func OPCUAPassword() string { return os.Getenv("MILLWRIGHT_OPCUA_PASSWORD") }

// NodeOPCUAOptions configure a private node-opcua server (deploy/opcua/server.js). Zero
// values take the script's defaults.
type NodeOPCUAOptions struct {
	// Port to listen on, on 127.0.0.1 (0: a free port, kept across restarts).
	Port int
	// Machines, Items and Interval size the simulated address space: machines × 7 signals
	// under Objects/Plant, Items Doubles under Objects/Load (ns=1;s=Load/i00000 ...), all
	// updated every Interval.
	Machines int
	Items    int
	Interval time.Duration
	// MaxNotifications is the server's per-publish notification limit (default: enough for
	// every item in one publish).
	MaxNotifications int
	// User and Password are the one user accepted with a password (default "millwright" and a
	// random password).
	User, Password string
	// Dir holds the server's PKI, password file and log (default a new temporary directory,
	// removed by Close).
	Dir string
}

// NodeOPCUA is a private node-opcua server, which its owner may kill and start again on the
// same port with the same certificate. Its methods are not safe for concurrent use.
type NodeOPCUA struct {
	URL            string
	Port           int
	User, Password string
	// PKIDir is the server's PKI: own/certs/certificate.pem is its certificate.
	PKIDir string

	dir, log, node, script, modules string
	removeDir                       bool
	args                            []string
	cmd                             *exec.Cmd
	exited                          chan struct{}
}

// NewNodeOPCUA prepares a private server without starting it. It needs node and the
// node_modules that deploy/services.sh installs ($MILLWRIGHT_NODE, $MILLWRIGHT_OPCUA_NODE_PATH,
// $MILLWRIGHT_OPCUA_SERVER_JS; the script defaults to deploy/opcua/server.js of this source tree).
func NewNodeOPCUA(o NodeOPCUAOptions) (*NodeOPCUA, error) {
	modules := os.Getenv("MILLWRIGHT_OPCUA_NODE_PATH")
	if modules == "" {
		return nil, errors.New("node-opcua: MILLWRIGHT_OPCUA_NODE_PATH is not set; run deploy/services.sh up and source .services/env")
	}
	node, err := exec.LookPath(env("MILLWRIGHT_NODE", "node"))
	if err != nil {
		return nil, fmt.Errorf("node-opcua: %w", err)
	}
	script := os.Getenv("MILLWRIGHT_OPCUA_SERVER_JS")
	if script == "" {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			return nil, errors.New("node-opcua: set MILLWRIGHT_OPCUA_SERVER_JS to deploy/opcua/server.js")
		}
		script = filepath.Join(filepath.Dir(file), "..", "..", "deploy", "opcua", "server.js")
	}
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("node-opcua: server script: %w", err)
	}
	n := &NodeOPCUA{node: node, script: script, modules: modules, dir: o.Dir, User: o.User, Password: o.Password, Port: o.Port}
	if n.dir == "" {
		if n.dir, err = os.MkdirTemp("", "node-opcua-"); err != nil {
			return nil, err
		}
		n.removeDir = true
	} else if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return nil, err
	}
	if n.User == "" {
		n.User = "millwright"
	}
	if n.Password == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		n.Password = hex.EncodeToString(b[:])
	}
	if n.Port == 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		n.Port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	n.URL = fmt.Sprintf("opc.tcp://127.0.0.1:%d", n.Port)
	n.PKIDir = filepath.Join(n.dir, "pki")
	n.log = filepath.Join(n.dir, "server.log")
	pwFile := filepath.Join(n.dir, "password")
	if err := os.WriteFile(pwFile, []byte(n.Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	n.args = []string{n.script, "--host", "127.0.0.1", "--port", strconv.Itoa(n.Port), "--pki", n.PKIDir,
		"--user", n.User, "--password-file", pwFile}
	add := func(flag string, v int) {
		if v > 0 {
			n.args = append(n.args, flag, strconv.Itoa(v))
		}
	}
	add("--machines", o.Machines)
	add("--items", o.Items)
	add("--interval", int(o.Interval/time.Millisecond))
	add("--max-notifications", o.MaxNotifications)
	return n, nil
}

// StartNodeOPCUA starts a private server for one test (skipping it when the integration
// services are absent) and stops it when the test ends.
func StartNodeOPCUA(t testing.TB, o NodeOPCUAOptions) *NodeOPCUA {
	t.Helper()
	Require(t, "node-opcua")
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	n, err := NewNodeOPCUA(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// Start starts the server (again) and returns once it accepts connections, or with an error
// that quotes the end of its log.
func (n *NodeOPCUA) Start(ctx context.Context) error {
	if n.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(n.node, n.args...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+n.modules)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("node-opcua: start: %w", err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { _ = cmd.Wait(); close(exited) }(n.exited)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.Port), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-n.exited:
			n.cmd = nil
			return fmt.Errorf("node-opcua exited during startup; log %s ends:\n%s", n.log, n.logTail())
		case <-ctx.Done():
			_ = n.Kill()
			return fmt.Errorf("node-opcua not listening on %s: %w; log ends:\n%s", n.URL, ctx.Err(), n.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill ends the server abruptly (SIGKILL) and waits for it to exit.
func (n *NodeOPCUA) Kill() error { return n.signal(syscall.SIGKILL, 0) }

// Stop ends the server with SIGTERM (a clean shutdown), and SIGKILL after 5 s.
func (n *NodeOPCUA) Stop() error { return n.signal(syscall.SIGTERM, 5*time.Second) }

func (n *NodeOPCUA) signal(sig syscall.Signal, grace time.Duration) error {
	if n.cmd == nil {
		return nil
	}
	_ = syscall.Kill(-n.cmd.Process.Pid, sig)
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGCONT) // a paused server handles no TERM
	if grace > 0 {
		select {
		case <-n.exited:
		case <-time.After(grace):
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	<-n.exited
	n.cmd = nil
	return nil
}

// Pause freezes the server (SIGSTOP): its connections stay open and nothing answers, as in
// a network stall. Resume (SIGCONT) lets it go on.
func (n *NodeOPCUA) Pause() error { return n.send(syscall.SIGSTOP) }

// Resume continues a paused server.
func (n *NodeOPCUA) Resume() error { return n.send(syscall.SIGCONT) }

func (n *NodeOPCUA) send(sig syscall.Signal) error {
	if n.cmd == nil {
		return errors.New("node-opcua is not running")
	}
	return syscall.Kill(-n.cmd.Process.Pid, sig)
}

// Close stops the server and removes its directory when NewNodeOPCUA made it.
func (n *NodeOPCUA) Close() error {
	err := n.Stop()
	if n.removeDir {
		err = errors.Join(err, os.RemoveAll(n.dir))
	}
	return err
}

// PID is the server's process id (0 when it is not running).
func (n *NodeOPCUA) PID() int {
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// CertFile is the server's application certificate (PEM), written on its first start.
func (n *NodeOPCUA) CertFile() string {
	return filepath.Join(n.PKIDir, "own", "certs", "certificate.pem")
}

// Log returns the server's log so far.
func (n *NodeOPCUA) Log() string {
	b, _ := os.ReadFile(n.log)
	return string(b)
}

func (n *NodeOPCUA) logTail() string {
	lines := strings.Split(strings.TrimSpace(n.Log()), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// ProcUsage is a process's CPU time and memory, from /proc.
type ProcUsage struct {
	CPU time.Duration // user + system time so far
	RSS int64         // resident set size now, bytes
	HWM int64         // peak resident set size, bytes
}

// ReadProcUsage reads the usage of process pid (0: this process) from /proc (Linux only).
func ReadProcUsage(pid int) (ProcUsage, error) {
	dir := "/proc/self"
	if pid > 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	var u ProcUsage
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return u, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, fmt.Errorf("%s/stat: unexpected format", dir)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("%s/stat: %d fields", dir, len(f))
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14, in clock ticks (USER_HZ = 100)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	u.CPU = time.Duration(utime+stime) * (time.Second / 100)
	status, err := os.Open(dir + "/status")
	if err != nil {
		return u, err
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != "VmRSS" && k != "VmHWM" {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if k == "VmRSS" {
			u.RSS = kb << 10
		} else {
			u.HWM = kb << 10
		}
	}
	return u, sc.Err()
}
