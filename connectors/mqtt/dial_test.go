package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func TestOpenConnectionTCPIsBuffered(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, err = c.Write([]byte("hello world"))
			c.Close()
		}
		served <- err
	}()
	u := &url.URL{Scheme: "tcp", Host: ln.Addr().String()}
	conn, err := openConnection(t.Context(), 5*time.Second)(u, paho.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, ok := conn.(*bufferedConn); !ok {
		t.Fatalf("connection is a %T, want *bufferedConn", conn)
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(conn, one); err != nil || one[0] != 'h' {
		t.Fatalf("read %q, %v", one, err)
	}
	rest, err := io.ReadAll(conn)
	if err != nil || string(rest) != "ello world" {
		t.Errorf("read %q, %v", rest, err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

func TestOpenConnectionTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	srv.StartTLS()
	defer srv.Close()
	u, err := url.Parse(strings.Replace(srv.URL, "https://", "ssl://", 1))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	// The server name is taken from the URL (an IP here, which the test certificate holds).
	conn, err := openConnection(t.Context(), 5*time.Second)(u, paho.ClientOptions{TLSConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatalf("TLS to a trusted server: %v", err)
	}
	conn.Close()

	_, err = openConnection(t.Context(), 5*time.Second)(u, paho.ClientOptions{})
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("TLS to an untrusted server = %v, want an unknown authority error", err)
	}
}

func TestOpenConnectionHonoursContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	u := &url.URL{Scheme: "tcp", Host: ln.Addr().String()}
	if _, err := openConnection(ctx, 5*time.Second)(u, paho.ClientOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("dial with a cancelled context = %v", err)
	}
	u.Scheme = "gopher"
	if _, err := openConnection(t.Context(), time.Second)(u, paho.ClientOptions{}); err == nil || err.Error() != `unknown URL scheme "gopher"` {
		t.Errorf("dial of an unknown scheme = %v", err)
	}
}

// Writes from many goroutines arrive complete and in each writer's order, coalesced into
// fewer sends than writes, and Close sends what is still pending.
func TestBufferedConnCoalescesInOrder(t *testing.T) {
	client, server := net.Pipe()
	var got bytes.Buffer
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		io.Copy(&got, server)
	}()
	c := newBufferedConn(client, time.Second)
	const writers, perWriter = 4, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				if _, err := c.Write([]byte{byte(w), byte(i >> 8), byte(i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	<-readDone
	b := got.Bytes()
	if len(b) != writers*perWriter*3 {
		t.Fatalf("received %d bytes, want %d", len(b), writers*perWriter*3)
	}
	next := make([]int, writers)
	for i := 0; i < len(b); i += 3 {
		w, n := int(b[i]), int(b[i+1])<<8|int(b[i+2])
		if n != next[w] {
			t.Fatalf("writer %d: got packet %d, want %d (order or bytes lost)", w, n, next[w])
		}
		next[w]++
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
}

// A failed send closes the connection and later writes report the error.
func TestBufferedConnFailedSendFailsWrites(t *testing.T) {
	client, server := net.Pipe()
	server.Close()
	c := newBufferedConn(client, time.Second)
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.Write([]byte("ping")); err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("writes kept succeeding after the peer closed")
		}
		time.Sleep(time.Millisecond)
	}
}

// After a failed send the reader still gets what the peer sent before it went away (a TLS
// alert saying why the broker refused the client), and then an error.
func TestBufferedConnFailedSendKeepsWhatPeerSent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := newBufferedConn(raw, time.Second)
	defer c.Close()
	// The peer says why and closes; its kernel resets the connection when more comes in.
	if _, err := peer.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.Write([]byte("more")); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writes kept succeeding after the peer reset the connection")
		}
		time.Sleep(time.Millisecond)
	}
	got := make([]byte, 3)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "bye" {
		t.Fatalf("read after the failed send = %q, %v; want what the peer sent", got, err)
	}
	if n, err := c.Read(got); err == nil {
		t.Fatalf("read %d more bytes from a reset connection", n)
	}
}
