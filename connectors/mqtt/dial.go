package mqtt

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

const (
	// readBufferSize is the read buffer in front of each connection.
	readBufferSize = 32 << 10
	// maxPendingWrite bounds the bytes written but not yet sent; writers wait past it.
	maxPendingWrite = 256 << 10
	// failedSendReadGrace is how long reads go on after a send failed, so that the reader
	// still gets what the peer sent before it went away.
	failedSendReadGrace = time.Second
)

// openConnection returns the function paho calls to open a network connection during one
// Connect. It opens what paho itself would (TCP, TLS or WebSocket, through the proxy that
// ALL_PROXY names, as paho does), with three differences: dialing and the TLS handshake
// stop when ctx is done, and reads and writes go through buffers. paho reads every packet
// header a byte at a time and writes every packet (each PUBACK) with its own system call;
// buffered, one read fetches many messages and one write sends every acknowledgement
// made while the previous write was under way.
func openConnection(ctx context.Context, timeout time.Duration) paho.OpenConnectionFunc {
	return func(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
		conn, err := dial(ctx, u, o, timeout)
		if err != nil {
			return nil, err
		}
		return newBufferedConn(conn, timeout), nil
	}
}

func dial(ctx context.Context, u *url.URL, o paho.ClientOptions, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := &net.Dialer{Timeout: timeout}
	switch u.Scheme {
	case "tcp", "mqtt":
		return dialTCP(ctx, d, u.Host)
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		conn, err := dialTCP(ctx, d, u.Host)
		if err != nil {
			return nil, err
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.TLSConfig != nil {
			cfg = o.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return tc, nil
	case "ws", "wss":
		dialURL := *u // the WebSocket library refuses URLs with user info
		dialURL.User = nil
		var cfg *tls.Config
		if u.Scheme == "wss" {
			cfg = o.TLSConfig
		}
		return paho.NewWebsocket(dialURL.String(), cfg, timeout, o.HTTPHeaders, o.WebsocketOptions)
	}
	return nil, fmt.Errorf("unknown URL scheme %q", u.Scheme)
}

// dialTCP dials addr directly or through the proxy the environment names.
func dialTCP(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
	pd := proxy.FromEnvironmentUsing(d)
	if cd, ok := pd.(proxy.ContextDialer); ok {
		return cd.DialContext(ctx, "tcp", addr)
	}
	return pd.Dial("tcp", addr)
}

// bufferedConn reads through a buffer and coalesces writes: Write appends to a pending
// buffer and returns; a flusher goroutine sends what is pending, so everything written
// while it sends goes out in its next write. Packets keep their order. After a failed send,
// writes fail and reads fail too once failedSendReadGrace has passed, so paho reports the
// connection lost. Reads are not cut off at once: a broker that refuses a client in the TLS
// handshake sends an alert that says why (certificate required, unknown certificate
// authority) and closes, and the reader must get that alert rather than a closed connection.
type bufferedConn struct {
	net.Conn
	r       *bufio.Reader
	timeout time.Duration

	sendMu sync.Mutex // held while sending, so sends never overlap and bytes keep their order

	mu      sync.Mutex
	cond    *sync.Cond // signalled when pending shrinks or the connection fails
	pending []byte
	spare   []byte
	err     error // the first send error, or net.ErrClosed after Close

	kick      chan struct{} // a Write queued bytes
	stop      chan struct{} // closed by Close
	done      chan struct{} // closed when the flusher has returned
	closeOnce sync.Once
	closeErr  error
}

func newBufferedConn(conn net.Conn, timeout time.Duration) *bufferedConn {
	c := &bufferedConn{
		Conn: conn, r: bufio.NewReaderSize(conn, readBufferSize), timeout: timeout,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	c.cond = sync.NewCond(&c.mu)
	go c.flusher()
	return c
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write queues p for sending. It waits while more than maxPendingWrite bytes are queued.
func (c *bufferedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && len(c.pending) > maxPendingWrite {
		c.cond.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.pending = append(c.pending, p...)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return len(p), nil
}

// SetWriteDeadline is a no-op: writes do not block, and the flusher bounds each send by
// the connection timeout itself.
func (c *bufferedConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only, for the same reason.
func (c *bufferedConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

func (c *bufferedConn) flusher() {
	defer close(c.done)
	for {
		select {
		case <-c.kick:
			if !c.flush() {
				return
			}
		case <-c.stop:
			return
		}
	}
}

// flush sends what is pending and reports whether the connection is still usable.
func (c *bufferedConn) flush() bool {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.mu.Lock()
	buf := c.pending
	c.pending, c.spare = c.spare[:0], nil
	failed := c.err != nil
	c.cond.Broadcast()
	c.mu.Unlock()
	if failed {
		return false
	}
	if len(buf) == 0 {
		return true
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	_, err := c.Conn.Write(buf)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if c.err == nil {
			c.err = err
		}
		c.cond.Broadcast()
		_ = c.Conn.SetReadDeadline(time.Now().Add(failedSendReadGrace))
		return false
	}
	c.spare = buf[:0]
	return true
}

// Close sends what is pending (so a DISCONNECT and the last acknowledgements reach the
// broker), then closes the connection and waits for the flusher.
func (c *bufferedConn) Close() error {
	c.closeOnce.Do(func() {
		c.flush()
		c.mu.Lock()
		if c.err == nil {
			c.err = net.ErrClosed
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		close(c.stop)
		c.closeErr = c.Conn.Close()
		<-c.done
	})
	return c.closeErr
}
