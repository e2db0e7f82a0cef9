package mqtt

import (
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
