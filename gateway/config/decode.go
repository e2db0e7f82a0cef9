package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaulter is implemented by config structs that have defaults. The decoder calls
// SetDefaults on every struct it creates (list elements, map values, new pointers) before it
// decodes the YAML into it; callers set defaults on the top-level value themselves.
type Defaulter interface {
	SetDefaults()
}

// ScalarDecoder is implemented by field types decoded from one YAML scalar (Secret, ByteSize).
type ScalarDecoder interface {
	DecodeScalar(s string) error
}

var (
	durationType        = reflect.TypeFor[time.Duration]()
	scalarDecoderType   = reflect.TypeFor[ScalarDecoder]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	defaulterType       = reflect.TypeFor[Defaulter]()
)

// MaxInputBytes bounds the size of a configuration document.
const MaxInputBytes = 4 << 20

// maxAliasedValues bounds the values the decoder reaches through YAML aliases (*name),
// counting a value again each time an alias repeats it, so that a small document of nested
// aliases cannot make decoding run for hours or exhaust memory.
const maxAliasedValues = 1 << 16

// Decode decodes one YAML document into v (a pointer to a struct) strictly: unknown keys,
// wrong types, duplicate keys and values out of range are errors. It reports every problem
// it finds, joined, each as a *FieldError with its path and line. Keys absent from the
// document keep the value v already had.
func Decode(data []byte, v any) error {
	if len(data) > MaxInputBytes {
		return &FieldError{Msg: fmt.Sprintf("document is %d bytes, more than the %d allowed", len(data), MaxInputBytes)}
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		panic("config.Decode: v must be a non-nil pointer")
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty document leaves the defaults
		}
		return &FieldError{Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return &FieldError{Line: extra.Line, Msg: "more than one YAML document; a configuration file holds exactly one"}
	}
	d := &decoder{}
	if len(doc.Content) == 1 {
		d.value("", doc.Content[0], rv.Elem())
	}
	return errors.Join(d.errs...)
}

type decoder struct {
	errs       []error
	aliasDepth int  // > 0 while decoding the target of an alias
	aliased    int  // values decoded through aliases, each repetition counted
	stopped    bool // too many aliased values: decode nothing more
}

// visit counts a value decoded through an alias and reports whether decoding may go on.
func (d *decoder) visit(path string, n *yaml.Node) bool {
	if d.stopped {
		return false
	}
	if d.aliasDepth == 0 {
		return true
	}
	d.aliased++
	if d.aliased > maxAliasedValues {
		d.stopped = true
		d.fail(path, n, "aliases repeat more than %d values; the document expands too much through its anchors", maxAliasedValues)
		return false
	}
	return true
}

func (d *decoder) fail(path string, n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{Path: path, Line: n.Line, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) value(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind == yaml.AliasNode {
		d.aliasDepth++
		d.value(path, n.Alias, v)
		d.aliasDepth--
		return
	}
	if !d.visit(path, n) {
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		// An explicit null (or "key:" with nothing) keeps the default.
		return
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			nv := reflect.New(v.Type().Elem())
			setDefaults(nv)
			v.Set(nv)
		}
		d.value(path, n, v.Elem())
		return
	}
	if v.CanAddr() {
		pv := v.Addr()
		if pv.Type().Implements(scalarDecoderType) {
			if s, ok := d.scalar(path, n, "a single value"); ok {
				if err := pv.Interface().(ScalarDecoder).DecodeScalar(s); err != nil {
					d.fail(path, n, "%v", err)
				}
			}
			return
		}
		if pv.Type().Implements(textUnmarshalerType) {
			if s, ok := d.scalar(path, n, "a single value"); ok {
				if err := pv.Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
					d.fail(path, n, "%v", err)
				}
			}
			return
		}
	}
	if v.Type() == durationType {
		if s, ok := d.scalar(path, n, "a duration such as 250ms, 10s or 5m"); ok {
			dur, err := time.ParseDuration(s)
			if err != nil {
				d.fail(path, n, "%q is not a duration; expected a number with a unit, such as 250ms, 10s or 5m", s)
				return
			}
			v.SetInt(int64(dur))
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(path, n, v)
	case reflect.Slice:
		d.list(path, n, v)
	case reflect.Map:
		d.mapping(path, n, v)
	case reflect.String:
		if s, ok := d.scalar(path, n, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if s, ok := d.scalar(path, n, "true or false"); ok {
			switch s {
			case "true":
				v.SetBool(true)
			case "false":
				v.SetBool(false)
			default:
				d.fail(path, n, "%q is not a boolean; expected true or false", s)
			}
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if s, ok := d.scalar(path, n, "an integer"); ok {
			i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, v.Type().Bits())
			if err != nil {
				d.fail(path, n, "%q is not an integer that fits in %d bits", s, v.Type().Bits())
				return
			}
			v.SetInt(i)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if s, ok := d.scalar(path, n, "a non-negative integer"); ok {
			u, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 0, v.Type().Bits())
			if err != nil {
				d.fail(path, n, "%q is not a non-negative integer that fits in %d bits", s, v.Type().Bits())
				return
			}
			v.SetUint(u)
		}
	case reflect.Float32, reflect.Float64:
		if s, ok := d.scalar(path, n, "a number"); ok {
			f, err := strconv.ParseFloat(s, v.Type().Bits())
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				d.fail(path, n, "%q is not a finite number", s)
				return
			}
			v.SetFloat(f)
		}
	case reflect.Interface:
		// Free-form values (rare): keep what YAML makes of them.
		var x any
		if err := n.Decode(&x); err != nil {
			d.fail(path, n, "%v", err)
			return
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
	default:
		panic(fmt.Sprintf("config: cannot decode into %s at %s", v.Type(), path))
	}
}

func (d *decoder) scalar(path string, n *yaml.Node, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.fail(path, n, "expected %s, found %s", want, kindName(n))
		return "", false
	}
	return n.Value, true
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping (key: value)"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "something else"
}

type field struct {
	name  string
	index []int
}

func fields(t reflect.Type) []field {
	var out []field
	for _, sf := range reflect.VisibleFields(t) {
		if !sf.IsExported() || sf.Anonymous {
			continue
		}
		tag := sf.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		out = append(out, field{name: name, index: sf.Index})
	}
	return out
}

func (d *decoder) structure(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "expected a mapping (key: value), found %s", kindName(n))
		return
	}
	fs := fields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := mapKey(n.Content[i]), n.Content[i+1]
		key := k.Value
		kp := Join(path, key)
		if !d.visit(kp, k) {
			return
		}
		if seen[key] {
			d.fail(kp, k, "key given twice")
			continue
		}
		seen[key] = true
		idx := slices.IndexFunc(fs, func(f field) bool { return f.name == key })
		if idx < 0 {
			names := make([]string, len(fs))
			for j, f := range fs {
				names[j] = f.name
			}
			msg := "unknown key"
			if s := closest(key, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.fail(kp, k, "%s; known keys here: %s", msg, strings.Join(names, ", "))
			continue
		}
		d.value(kp, val, v.FieldByIndex(fs[idx].index))
	}
}

func (d *decoder) list(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		d.fail(path, n, "expected a list, found %s", kindName(n))
		return
	}
	out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		setDefaults(out.Index(i).Addr())
		d.value(Index(path, i), item, out.Index(i))
	}
	v.Set(out)
}

func (d *decoder) mapping(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "expected a mapping (key: value), found %s", kindName(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		panic("config: map keys must be strings")
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := mapKey(n.Content[i]), n.Content[i+1]
		kp := Join(path, k.Value)
		if !d.visit(kp, k) {
			return
		}
		if seen[k.Value] {
			d.fail(kp, k, "key given twice")
			continue
		}
		seen[k.Value] = true
		ev := reflect.New(v.Type().Elem())
		setDefaults(ev)
		d.value(kp, val, ev.Elem())
		v.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), ev.Elem())
	}
}

// mapKey resolves a key written as an alias (*name) to the key it repeats.
func mapKey(k *yaml.Node) *yaml.Node {
	if k.Kind == yaml.AliasNode {
		return k.Alias
	}
	return k
}

func setDefaults(p reflect.Value) {
	if p.Type().Implements(defaulterType) {
		p.Interface().(Defaulter).SetDefaults()
	}
}

// closest returns the candidate within edit distance 2 of s, if any.
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
