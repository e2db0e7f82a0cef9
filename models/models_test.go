package models

import (
	"math"
	"strings"
	"testing"
)

func TestDecodeJSON(t *testing.T) {
	type v struct {
		A int `json:"a"`
	}
	tests := []struct {
		in, err string
	}{
		{`{"a":1}`, ""},
		{` {"a":1} ` + "\n", ""},
		{`{"a":1,"b":2}`, "unknown field"},
		{`{"a":1}{"a":2}`, "trailing data"},
		{`{"a":1} x`, "trailing data"},
		{`{"a":`, "unexpected EOF"},
		{``, "EOF"},
	}
	for _, tc := range tests {
		var got v
		err := DecodeJSON([]byte(tc.in), &got)
		switch {
		case tc.err == "" && (err != nil || got.A != 1):
			t.Errorf("%q: %+v, %v", tc.in, got, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v; want one containing %q", tc.in, err, tc.err)
		}
	}
}

func TestQuantileAndFinite(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5}
	for q, want := range map[float64]float64{0: 1, 0.5: 3, 0.9: 4.6, 1: 5, -1: 1, 2: 5} {
		if got := Quantile(s, q); math.Abs(got-want) > 1e-12 {
			t.Errorf("Quantile(%v) = %v; want %v", q, got, want)
		}
	}
	if !math.IsNaN(Quantile(nil, 0.5)) {
		t.Error("quantile of nothing is not NaN")
	}
	if err := CheckFinite("x", []float64{1, math.Inf(1)}); err == nil || !strings.Contains(err.Error(), "x[1]") {
		t.Errorf("CheckFinite: %v", err)
	}
}

func TestArchitectureEqual(t *testing.T) {
	a := Architecture{Kind: "autoencoder", Version: 1, Inputs: 8, Layers: []int{4, 2, 4}, Activation: "tanh", Params: 100}
	b := a
	b.Layers = []int{4, 2, 4}
	if !a.Equal(b) {
		t.Error("equal architectures differ")
	}
	for _, change := range []func(*Architecture){
		func(x *Architecture) { x.Layers = []int{4, 3, 4} },
		func(x *Architecture) { x.Layers = []int{4, 2} },
		func(x *Architecture) { x.Kernel = 3 },
		func(x *Architecture) { x.Channels = 2 },
		func(x *Architecture) { x.Params++ },
		func(x *Architecture) { x.Activation = "relu" },
	} {
		c := a
		c.Layers = []int{4, 2, 4}
		change(&c)
		if a.Equal(c) {
			t.Errorf("%+v equals %+v", c, a)
		}
	}
}

func TestMatrix(t *testing.T) {
	m := NewMatrix(3, 2)
	m.Row(1)[1] = 5
	if m.Data[3] != 5 || m.Slice(1, 3).Row(0)[1] != 5 {
		t.Error("rows do not share storage")
	}
	if err := m.Check(4); err == nil {
		t.Error("3 rows passed a check for 4")
	}
	if err := (Matrix{Rows: 2, Cols: 2, Data: make([]float64, 3)}).Check(0); err == nil {
		t.Error("a malformed matrix passed")
	}
}
