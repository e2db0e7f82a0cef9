package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestHandleJSON: a JSON endpoint serves what its function returns at each request.
func TestHandleJSON(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv := New(addr, prometheus.NewRegistry(), func() error { return nil }, false, slog.New(slog.DiscardHandler))
	var n atomic.Int64
	srv.HandleJSON("/api/v1/things", func() any { return map[string]int64{"calls": n.Add(1)} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	get := func() (int, string, map[string]int64) {
		var resp *http.Response
		for i := 0; ; i++ {
			resp, err = http.Get("http://" + addr + "/api/v1/things")
			if err == nil || i == 100 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]int64
		_ = json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, resp.Header.Get("Content-Type"), v
	}
	for want := int64(1); want <= 2; want++ {
		code, ct, v := get()
		if code != http.StatusOK || ct != "application/json" || v["calls"] != want {
			t.Fatalf("GET: %d %q %v, want 200 application/json calls=%d", code, ct, v, want)
		}
	}
	resp, err := http.Post("http://"+addr+"/api/v1/things", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d, want 405", resp.StatusCode)
	}
}
