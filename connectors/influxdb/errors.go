package influxdb

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	influxhttp "github.com/influxdata/influxdb-client-go/v2/api/http"

	"github.com/millwright-io/millwright/connectors"
)

// WriteError is a request to InfluxDB that failed as a whole: nothing of it, or not all of
// it, was stored, and the pipeline retries the batch (rewriting points is idempotent).
//
// Connection failures (refused, reset, DNS) and a server certificate that the configured CA
// does not verify also match connectors.ErrNotConnected with errors.Is. RetryAfter returns
// how long the server asked clients to wait (the Retry-After header of a 429 or 503), or 0;
// the pipeline waits at least that long before retrying (up to pipeline.MaxRetryAfter, an
// hour).
type WriteError struct {
	// Op is what failed: "write" or "ping".
	Op string
	// URL is the server's base URL.
	URL string
	// StatusCode is the HTTP status, or 0 when no response arrived (connection failure,
	// timeout).
	StatusCode int
	// Message is the server's error message, or the transport error's text.
	Message string
	// Hint says what to check, for errors a configuration change fixes (401, 403, 404, an
	// unverified server certificate).
	Hint string

	retryAfter time.Duration
	timeout    bool
	err        error // the transport error, if any
	notConn    bool  // the connection failed: matches connectors.ErrNotConnected
}

func (e *WriteError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "influxdb %s to %s: ", e.Op, e.URL)
	switch {
	case e.StatusCode != 0:
		b.WriteString(strconv.Itoa(e.StatusCode))
		if t := http.StatusText(e.StatusCode); t != "" {
			b.WriteString(" " + t)
		}
		if e.Message != "" {
			b.WriteString(": " + e.Message)
		}
	case e.timeout:
		b.WriteString("timed out: " + e.Message)
	case e.notConn:
		b.WriteString("connection failed: " + e.Message)
	default:
		b.WriteString(e.Message)
	}
	if e.retryAfter > 0 {
		fmt.Fprintf(&b, " (server asks to retry after %s)", e.retryAfter)
	}
	if e.Hint != "" {
		b.WriteString("; " + e.Hint)
	}
	return b.String()
}

// Unwrap returns the transport error and, for connection failures, connectors.ErrNotConnected.
func (e *WriteError) Unwrap() []error {
	var errs []error
	if e.notConn {
		errs = append(errs, connectors.ErrNotConnected)
	}
	if e.err != nil {
		errs = append(errs, e.err)
	}
	return errs
}

// RetryAfter returns the wait the server asked for, or 0.
func (e *WriteError) RetryAfter() time.Duration { return e.retryAfter }

// Timeout reports whether the request timed out.
func (e *WriteError) Timeout() bool { return e.timeout }

// classifyTransport turns an error of a request that got no response into a WriteError, or
// returns ctx's error when the caller's context ended.
func classifyTransport(ctx context.Context, op, baseURL string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("influxdb %s to %s: %w", op, baseURL, cerr)
	}
	we := &WriteError{Op: op, URL: baseURL, Message: transportMessage(err), err: err}
	switch {
	case errors.Is(err, context.DeadlineExceeded) || isNetTimeout(err):
		we.timeout = true
	case isCertificateError(err):
		// Connect reads the TLS files again, so a lost connection is the report that helps:
		// after a CA rotation the pipeline's reconnect picks up the new ca_file.
		we.notConn = true
		we.Hint = "check that tls.ca_file holds the CA that signed the server's certificate (every reconnect reads it again)"
	case isConnectionError(err):
		we.notConn = true
	}
	return we
}

// isCertificateError reports whether err is the server's certificate failing verification.
func isCertificateError(err error) bool {
	var ve *tls.CertificateVerificationError
	return errors.As(err, &ve)
}

// transportMessage strips the "Post \"url\": " prefix net/http puts on errors (the URL is in
// the WriteError already).
func transportMessage(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err.Error()
	}
	return err.Error()
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isConnectionError reports whether err means the connection could not be made or broke.
func isConnectionError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// statusError turns an HTTP error response into a WriteError with a hint for the statuses a
// configuration change fixes.
func (s *Sink) statusError(op string, he *influxhttp.Error) *WriteError {
	we := &WriteError{Op: op, URL: s.cfg.URL, StatusCode: he.StatusCode, Message: serverMessage(he)}
	we.retryAfter = retryAfter(he)
	switch he.StatusCode {
	case http.StatusUnauthorized:
		we.Hint = "check the token (an InfluxDB 2.x API token, or \"user:password\" for InfluxDB 1.8 with authentication on)"
	case http.StatusForbidden:
		we.Hint = fmt.Sprintf("check that the token may write to bucket %q", s.cfg.Bucket)
	case http.StatusNotFound:
		we.Hint = fmt.Sprintf("check that bucket %q exists (on InfluxDB 1.8, that database %q exists: create it with CREATE DATABASE %q) and that the server serves the v2 write API (InfluxDB 1.8 or later)",
			s.cfg.Bucket, database(s.cfg.Bucket), database(s.cfg.Bucket))
	}
	return we
}

// database returns the database part of a 1.8 bucket ("db/rp" or "db").
func database(bucket string) string {
	db, _, _ := strings.Cut(bucket, "/")
	return db
}

// serverMessage returns the server's own message: InfluxDB 2.x sends it as JSON, 1.8 in the
// X-Influxdb-Error header, which the client library falls back to.
func serverMessage(he *influxhttp.Error) string {
	msg := he.Message
	if msg == "" && he.Header != nil {
		msg = he.Header.Get("X-Influxdb-Error")
	}
	if msg == "" && he.Err != nil {
		msg = he.Err.Error()
	}
	return strings.TrimSpace(msg)
}

// retryAfter reads the Retry-After the client parsed (seconds), or parses an HTTP date.
func retryAfter(he *influxhttp.Error) time.Duration {
	if he.RetryAfter > 0 {
		return time.Duration(he.RetryAfter) * time.Second
	}
	if he.Header == nil {
		return 0
	}
	v := he.Header.Get("Retry-After")
	if v == "" {
		return 0
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d.Round(time.Second)
		}
	}
	return 0
}
