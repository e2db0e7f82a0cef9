package opcua

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// browsed is a variable found below a browse root or at a browse path.
type browsed struct {
	nodeID *ua.NodeID
	path   string // browse names from the root, joined by "/"
}

// children returns the forward hierarchical references of n, except properties, following
// continuation points. A bad status of the node's browse result is an error (a
// *browseError), not a node without children: a server answers BadNoContinuationPoints or
// BadTooManyOperations when busy (Part 4, 5.8.2), and taken for an empty folder that would
// remove the monitored items below it.
func children(ctx context.Context, c *opcua.Client, n *ua.NodeID) ([]*ua.ReferenceDescription, error) {
	res, err := c.Browse(ctx, &ua.BrowseRequest{
		View: &ua.ViewDescription{ViewID: ua.NewTwoByteNodeID(0)},
		NodesToBrowse: []*ua.BrowseDescription{{
			NodeID:          n,
			BrowseDirection: ua.BrowseDirectionForward,
			ReferenceTypeID: ua.NewNumericNodeID(0, id.HierarchicalReferences),
			IncludeSubtypes: true,
			NodeClassMask:   uint32(ua.NodeClassAll),
			ResultMask:      uint32(ua.BrowseResultMaskAll),
		}},
	})
	if err != nil {
		return nil, err
	}
	results := res.Results
	var refs []*ua.ReferenceDescription
	for {
		if len(results) != 1 || results[0] == nil {
			return nil, fmt.Errorf("%d browse results for 1 node", len(results))
		}
		r := results[0]
		if uint32(r.StatusCode)&severityMask != severityGood {
			return nil, &browseError{node: n, code: r.StatusCode}
		}
		refs = append(refs, r.References...)
		if len(r.ContinuationPoint) == 0 {
			break
		}
		next, err := c.BrowseNext(ctx, &ua.BrowseNextRequest{ContinuationPoints: [][]byte{r.ContinuationPoint}})
		if err != nil {
			return nil, err
		}
		results = next.Results
	}
	out := refs[:0]
	for _, r := range refs {
		if r == nil || r.NodeID == nil || r.NodeID.NodeID == nil || r.BrowseName == nil {
			continue
		}
		if r.ReferenceTypeID != nil && r.ReferenceTypeID.Namespace() == 0 && r.ReferenceTypeID.IntID() == id.HasProperty {
			continue // EURange, EngineeringUnits and the like describe a variable, they are not items
		}
		out = append(out, r)
	}
	return out, nil
}

// browseError is a bad status of a node's browse result.
type browseError struct {
	node *ua.NodeID
	code ua.StatusCode
}

func (e *browseError) Error() string { return fmt.Sprintf("browse %s: %v", e.node, e.code) }
func (e *browseError) Unwrap() error { return e.code }

// discover browses below b's root breadth-first, down to max_depth levels, and returns the
// variables whose path passes the include and exclude patterns, at most max_items of them;
// over is how many more matched. Standard nodes (namespace 0), such as the Server object
// below Objects, are not entered. Objects are entered, variables are not (their children
// are components of complex values).
func discover(ctx context.Context, c *opcua.Client, b Browse, include, exclude []glob) (found []browsed, over int, err error) {
	root, err := ua.ParseNodeID(b.Root)
	if err != nil {
		return nil, 0, err
	}
	type node struct {
		id    *ua.NodeID
		path  string
		depth int
	}
	seen := map[string]bool{root.String(): true}
	queue := []node{{id: root}}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		refs, err := children(ctx, c, n.id)
		var be *browseError
		switch {
		case errors.As(err, &be):
			return found, over, err
		case err != nil:
			return found, over, fmt.Errorf("browse %s: %w", n.id, err)
		}
		for _, r := range refs {
			cid := r.NodeID.NodeID
			if cid.Namespace() == 0 {
				continue
			}
			key := cid.String()
			if seen[key] {
				continue
			}
			seen[key] = true
			path := r.BrowseName.Name
			if n.path != "" {
				path = n.path + "/" + path
			}
			switch r.NodeClass {
			case ua.NodeClassVariable:
				if !selected(path, include, exclude) {
					continue
				}
				if len(found) >= b.MaxItems {
					over++
					continue
				}
				found = append(found, browsed{nodeID: cid, path: path})
			case ua.NodeClassObject:
				if n.depth+1 < b.MaxDepth {
					queue = append(queue, node{id: cid, path: path, depth: n.depth + 1})
				}
			}
		}
	}
	return found, over, nil
}

func selected(path string, include, exclude []glob) bool {
	ok := len(include) == 0
	for _, g := range include {
		if g.match(path) {
			ok = true
			break
		}
	}
	if !ok {
		return false
	}
	for _, g := range exclude {
		if g.match(path) {
			return false
		}
	}
	return true
}

// resolvePath walks a browse path from the Objects folder and returns the node it names
// and its path without namespace indexes.
func resolvePath(ctx context.Context, c *opcua.Client, segs []pathSegment) (browsed, error) {
	cur := ua.NewNumericNodeID(0, id.ObjectsFolder)
	names := make([]string, 0, len(segs))
	for i, seg := range segs {
		refs, err := children(ctx, c, cur)
		if err != nil {
			return browsed{}, fmt.Errorf("browse %s: %w", cur, err)
		}
		var next *ua.NodeID
		for _, r := range refs {
			if r.BrowseName.Name == seg.name && (seg.ns < 0 || int(r.BrowseName.NamespaceIndex) == seg.ns) {
				next = r.NodeID.NodeID
				break
			}
		}
		if next == nil {
			return browsed{}, &pathError{at: strings.Join(append(names, seg.name), "/"), segment: i + 1}
		}
		cur = next
		names = append(names, seg.name)
	}
	return browsed{nodeID: cur, path: strings.Join(names, "/")}, nil
}

// pathError reports a browse path segment that names no child.
type pathError struct {
	at      string
	segment int
}

func (e *pathError) Error() string {
	return fmt.Sprintf("browse path not found at segment %d (%s)", e.segment, e.at)
}
