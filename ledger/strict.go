package ledger

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
)

// The strict decoder checks a JSON document against the Go type it is about to be decoded
// into, before encoding/json sees it, so that every unknown member and every value of the
// wrong type is reported with its full path and value, not only the first one.

var (
	recordType  = reflect.TypeFor[Record]()
	timeType    = reflect.TypeFor[time.Time]()
	rawType     = reflect.TypeFor[json.RawMessage]()
	fieldsCache = map[reflect.Type]map[string]reflect.Type{}
)

func init() {
	for _, t := range append([]reflect.Type{recordType}, slices.Collect(maps.Values(bodyFactories))...) {
		registerFields(t)
	}
}

// registerFields fills fieldsCache for t and every struct type reachable from it, at init,
// so that decoding reads the cache without locking.
func registerFields(t reflect.Type) {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map:
		if t != rawType {
			registerFields(t.Elem())
		}
		return
	case reflect.Struct:
	default:
		return
	}
	if t == timeType {
		return
	}
	if _, ok := fieldsCache[t]; ok {
		return
	}
	fields := map[string]reflect.Type{}
	fieldsCache[t] = fields
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		for f := range t.Fields() {
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
				add(f.Type)
				continue
			}
			if name == "" {
				name = f.Name
			}
			fields[name] = f.Type
			registerFields(f.Type)
		}
	}
	add(t)
}

// checker collects the problems of a document.
type checker struct {
	p      *config.Problems
	values int // problems other than unknown fields
}

func (c *checker) badf(path, format string, args ...any) {
	c.values++
	c.p.Addf(path, format, args...)
}

// checkJSON reports into p every way the JSON document b does not fit type t. valuesOK is
// false when a value is missing its type or is out of range (as opposed to unknown fields,
// which encoding/json skips): the caller should not validate what it decodes then.
func checkJSON(p *config.Problems, path string, b []byte, t reflect.Type) (valuesOK bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		p.Addf(path, "not JSON: %v", err)
		return false
	}
	c := checker{p: p}
	checkValue(&c, path, v, t)
	return c.values == 0
}

func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(v)
	case json.Number:
		return "number " + v.String()
	case bool:
		return "boolean " + strconv.FormatBool(v)
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprint(v)
}

func checkValue(c *checker, path string, v any, t reflect.Type) {
	switch {
	case t == timeType:
		s, ok := v.(string)
		if !ok {
			c.badf(path, "got %s, expected RFC 3339 UTC", describe(v))
			return
		}
		if tm, err := time.Parse(time.RFC3339Nano, s); err != nil || !strings.HasSuffix(s, "Z") || tm.Year() < 1 {
			c.badf(path, "%q is not a UTC time, expected RFC 3339 UTC (2006-01-02T15:04:05.999999999Z)", s)
		}
		return
	case t == rawType:
		if _, ok := v.(map[string]any); !ok {
			c.badf(path, "got %s, expected an object", describe(v))
		}
		return
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			c.badf(path, "got %s, expected a string", describe(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			c.badf(path, "got %s, expected true or false", describe(v))
		}
	case reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			c.badf(path, "got %s, expected an integer", describe(v))
			return
		}
		if i, err := strconv.ParseInt(n.String(), 10, 64); err != nil || i > MaxSafeInteger || i < -MaxSafeInteger {
			c.badf(path, "%s is not an integer in range, expected an integer between -%d and %d", n, int64(MaxSafeInteger), int64(MaxSafeInteger))
		}
	case reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			c.badf(path, "got %s, expected a number", describe(v))
			return
		}
		if f, err := strconv.ParseFloat(n.String(), 64); err != nil || math.IsInf(f, 0) {
			c.badf(path, "%s is out of range, expected a finite number", n)
		}
	case reflect.Interface:
		switch v := v.(type) {
		case string, bool:
		case json.Number:
			checkValue(c, path, v, reflect.TypeFor[float64]())
		default:
			c.badf(path, "got %s, expected a string, number or boolean", describe(v))
		}
	case reflect.Pointer:
		if v != nil {
			checkValue(c, path, v, t.Elem())
		}
	case reflect.Slice:
		if v == nil {
			return
		}
		a, ok := v.([]any)
		if !ok {
			c.badf(path, "got %s, expected an array", describe(v))
			return
		}
		for i, e := range a {
			checkValue(c, config.Index(path, i), e, t.Elem())
		}
	case reflect.Map:
		if v == nil {
			return
		}
		m, ok := v.(map[string]any)
		if !ok {
			c.badf(path, "got %s, expected an object", describe(v))
			return
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			checkValue(c, config.Join(path, k), m[k], t.Elem())
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			c.badf(path, "got %s, expected an object", describe(v))
			return
		}
		fields := fieldsCache[t]
		for _, k := range slices.Sorted(maps.Keys(m)) {
			ft, known := fields[k]
			if !known {
				c.p.Addf(config.Join(path, k), "unknown field, expected one of %s", strings.Join(slices.Sorted(maps.Keys(fields)), ", "))
				continue
			}
			checkValue(c, config.Join(path, k), m[k], ft)
		}
	default:
		panic(fmt.Sprintf("ledger: no strict check for %v", t)) // programmer error: a new field type
	}
}
