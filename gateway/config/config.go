// Package config decodes Millwright's YAML configuration strictly and reports every problem at once, each with its path.
//
// Components own their typed Config structs with yaml tags, a SetDefaults method and a
// Validate method; this package supplies the decoder and the field types they share
// (Secret, ByteSize, TLS) and the Problems collector their Validate methods use.
package config

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one problem in the configuration, at Path ("sources[1].mqtt.topics[0].qos").
type FieldError struct {
	Path string
	Line int // 0 when unknown (a problem found by Validate rather than by the decoder)
	Msg  string
}

func (e *FieldError) Error() string {
	path := e.Path
	if path == "" {
		path = "(top level)"
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s: line %d: %s", path, e.Line, e.Msg)
	}
	return path + ": " + e.Msg
}

// Problems collects FieldErrors. The zero value is ready to use.
type Problems struct {
	errs []error
}

// Addf records a problem at path.
func (p *Problems) Addf(path, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Nest records every problem of err (as returned by a nested Validate) under prefix.
func (p *Problems) Nest(prefix string, err error) {
	if err == nil {
		return
	}
	p.errs = append(p.errs, Prefix(prefix, err))
}

// Err returns nil or the errors.Join of every problem, in the order found.
func (p *Problems) Err() error { return errors.Join(p.errs...) }

// Merge joins the decoder's problems and Validate's into one error, leaving out a
// validation problem at a path the decoder already reported: a value the decoder could not
// set is then also missing or zero, and saying so twice adds nothing.
func Merge(decode, validate error) error {
	if decode == nil || validate == nil {
		return errors.Join(decode, validate)
	}
	reported := map[string]bool{}
	for _, e := range Flatten(decode) {
		if fe := (*FieldError)(nil); errors.As(e, &fe) {
			reported[fe.Path] = true
		}
	}
	out := []error{decode}
	for _, e := range Flatten(validate) {
		if fe := (*FieldError)(nil); errors.As(e, &fe) && reported[fe.Path] {
			continue
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// Prefix puts prefix in front of the path of every FieldError in err (which may be joined).
// Other errors are wrapped as a FieldError at prefix.
func Prefix(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range Flatten(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			c := *fe
			c.Path = Join(prefix, c.Path)
			out = append(out, &c)
			continue
		}
		out = append(out, &FieldError{Path: prefix, Msg: e.Error()})
	}
	return errors.Join(out...)
}

// Flatten returns the leaves of a tree of joined errors.
func Flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// Join joins path elements: Join("sources[1]", "mqtt") is "sources[1].mqtt" and
// Join("topics", "[0]") is "topics[0]".
func Join(prefix, rest string) string {
	switch {
	case prefix == "":
		return rest
	case rest == "":
		return prefix
	case strings.HasPrefix(rest, "["):
		return prefix + rest
	}
	return prefix + "." + rest
}

// Index returns the path of element i of the list at path.
func Index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }
