package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/millwright-io/millwright/internal/atomicfile"
	"github.com/millwright-io/millwright/models"
)

// Ext is the file extension of artifact files.
const Ext = ".model.json"

// headName is the per-machine file naming the current and previous models.
const headName = "HEAD.json"

var idPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// checkMachine accepts machine names that are safe as a directory name.
func checkMachine(m string) error {
	switch {
	case m == "":
		return errors.New("machine is empty; expected a name")
	case len(m) > 200:
		return fmt.Errorf("machine is %d bytes; expected at most 200", len(m))
	case m == "." || m == ".." || strings.HasPrefix(m, "."):
		return fmt.Errorf("machine %q starts with a dot; expected a plain name", m)
	}
	for _, r := range m {
		if r == '/' || r == '\\' || r < ' ' || r == 0x7f {
			return fmt.Errorf("machine %q contains %q; expected no path separators or control characters", m, r)
		}
	}
	return nil
}

// Head names a machine's current and previous models by their identity ("" when none).
type Head struct {
	Current  string `json:"current"`
	Previous string `json:"previous,omitempty"`
}

// Dir is a directory of artifacts: <root>/<machine>/<id>.model.json and
// <root>/<machine>/HEAD.json. Every write is atomic and durable. Dir holds no state of its
// own; a Dir is safe for use by one writer and concurrent readers.
type Dir struct {
	root string
}

// OpenDir returns the store at root, creating the directory when missing.
func OpenDir(root string) (*Dir, error) {
	if err := os.MkdirAll(root, 0o750); err != nil {
		return nil, fmt.Errorf("model store: %w", err)
	}
	return &Dir{root: root}, nil
}

// Path returns the file of machine's model id.
func (d *Dir) Path(machine, id string) string {
	return filepath.Join(d.root, machine, id+Ext)
}

// Save writes a's file (named by its identity) without making it current, and returns the
// identity.
func (d *Dir) Save(a *Artifact) (string, error) {
	if err := checkMachine(a.Machine); err != nil {
		return "", fmt.Errorf("model store: %w", err)
	}
	data, id, err := Encode(a)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(d.root, a.Machine), 0o750); err != nil {
		return "", fmt.Errorf("model store: %w", err)
	}
	if err := atomicfile.WriteFile(d.Path(a.Machine, id), data, 0o640, true); err != nil {
		return "", fmt.Errorf("model store: save %s: %w", a.Machine, err)
	}
	return id, nil
}

// Head returns machine's head; a machine without one has an empty Head and no error.
func (d *Dir) Head(machine string) (Head, error) {
	if err := checkMachine(machine); err != nil {
		return Head{}, fmt.Errorf("model store: %w", err)
	}
	path := filepath.Join(d.root, machine, headName)
	data, err := readLimited(path, 4096)
	if errors.Is(err, fs.ErrNotExist) {
		return Head{}, nil
	}
	if err != nil {
		return Head{}, fmt.Errorf("model store: %w", err)
	}
	var h Head
	if err := models.DecodeJSON(data, &h); err != nil {
		return Head{}, fmt.Errorf("model store: %s: %w: %v", path, ErrCorrupt, err)
	}
	for _, id := range []string{h.Current, h.Previous} {
		if id != "" && !idPattern.MatchString(id) {
			return Head{}, fmt.Errorf("model store: %s: %w: %q is not a model identity (64 hex digits)", path, ErrCorrupt, id)
		}
	}
	return h, nil
}

// Promote makes the saved model id machine's current one; the current one becomes the
// previous. The model must load.
func (d *Dir) Promote(machine, id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("model store: promote: %q is not a model identity (64 hex digits)", id)
	}
	if _, err := d.Load(machine, id); err != nil {
		return fmt.Errorf("model store: promote: %w", err)
	}
	h, err := d.Head(machine)
	if err != nil {
		return err
	}
	if h.Current == id {
		return nil
	}
	return d.writeHead(machine, Head{Current: id, Previous: h.Current})
}

// Rollback makes the previous model current again (and the current one previous).
func (d *Dir) Rollback(machine string) error {
	h, err := d.Head(machine)
	if err != nil {
		return err
	}
	if h.Previous == "" {
		return fmt.Errorf("model store: rollback %s: no previous model", machine)
	}
	return d.writeHead(machine, Head{Current: h.Previous, Previous: h.Current})
}

func (d *Dir) writeHead(machine string, h Head) error {
	data := fmt.Appendf(nil, "{\"current\":%q,\"previous\":%q}\n", h.Current, h.Previous)
	if err := atomicfile.WriteFile(filepath.Join(d.root, machine, headName), data, 0o640, true); err != nil {
		return fmt.Errorf("model store: %s: %w", machine, err)
	}
	return nil
}

// Load reads and verifies machine's model id.
func (d *Dir) Load(machine, id string) (*Model, error) {
	if err := checkMachine(machine); err != nil {
		return nil, fmt.Errorf("model store: %w", err)
	}
	if !idPattern.MatchString(id) {
		return nil, fmt.Errorf("model store: %q is not a model identity (64 hex digits)", id)
	}
	m, err := LoadFile(d.Path(machine, id))
	if err != nil {
		return nil, err
	}
	if m.ID != id {
		return nil, fmt.Errorf("%s: %w: its content hash is %s, not the %s its name says", d.Path(machine, id), ErrCorrupt, m.ID, id)
	}
	if m.Artifact.Machine != machine {
		return nil, fmt.Errorf("%s: %w: the artifact is for machine %q, not %q", d.Path(machine, id), ErrCorrupt, m.Artifact.Machine, machine)
	}
	return m, nil
}

// Current loads machine's current model. When it fails to load, Current loads the previous
// one and returns it together with the current one's error (fellBack true), so that the
// caller keeps scoring and reports the problem. With neither, it returns the errors.
func (d *Dir) Current(machine string) (m *Model, fellBack bool, err error) {
	h, err := d.Head(machine)
	if err != nil {
		return nil, false, err
	}
	if h.Current == "" {
		return nil, false, fmt.Errorf("model store: machine %s: %w", machine, fs.ErrNotExist)
	}
	m, cerr := d.Load(machine, h.Current)
	if cerr == nil {
		return m, false, nil
	}
	if h.Previous == "" {
		return nil, false, cerr
	}
	m, perr := d.Load(machine, h.Previous)
	if perr != nil {
		return nil, false, errors.Join(cerr, perr)
	}
	return m, true, cerr
}

// Machines lists the machines with a head, sorted.
func (d *Dir) Machines() ([]string, error) {
	ents, err := os.ReadDir(d.root)
	if err != nil {
		return nil, fmt.Errorf("model store: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() || checkMachine(e.Name()) != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d.root, e.Name(), headName)); err == nil {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// LoadFile reads and verifies one artifact file.
func LoadFile(path string) (*Model, error) {
	data, err := readLimited(path, MaxFileBytes)
	if err != nil {
		return nil, fmt.Errorf("model artifact: %w", err)
	}
	return Decode(path, data)
}

// readLimited reads path, refusing files over limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", path, ErrCorrupt, limit)
	}
	return data, nil
}
