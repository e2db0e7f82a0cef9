package telemetry

import "sync"

// Interner returns one shared string for equal byte slices, so decoders that see the same
// names (topics, signal keys, machine ids) over and over allocate each only once.
// It holds at most a fixed number of strings; past that it still returns correct strings but
// allocates them, so a flood of distinct names cannot grow memory without bound.
// It is safe for concurrent use.
type Interner struct {
	mu    sync.RWMutex
	m     map[string]string
	limit int
}

// NewInterner returns an interner that keeps at most limit strings.
func NewInterner(limit int) *Interner {
	return &Interner{m: make(map[string]string), limit: limit}
}

// Bytes returns the interned string equal to b.
func (in *Interner) Bytes(b []byte) string {
	in.mu.RLock()
	s, ok := in.m[string(b)] // the compiler does not allocate for this lookup
	in.mu.RUnlock()
	if ok {
		return s
	}
	s = string(b)
	in.mu.Lock()
	if len(in.m) < in.limit {
		in.m[s] = s
	}
	in.mu.Unlock()
	return s
}

// String returns the interned copy of s.
func (in *Interner) String(s string) string {
	in.mu.RLock()
	t, ok := in.m[s]
	in.mu.RUnlock()
	if ok {
		return t
	}
	in.mu.Lock()
	if len(in.m) < in.limit {
		in.m[s] = s
	}
	in.mu.Unlock()
	return s
}

// Len returns how many strings are held.
func (in *Interner) Len() int {
	in.mu.RLock()
	defer in.mu.RUnlock()
	return len(in.m)
}
