package opcua

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// pathSegment is one browse name of a configured browse path. ns is -1 when the segment
// gives no namespace index (any namespace matches).
type pathSegment struct {
	ns   int
	name string
}

// parseBrowsePath parses "2:Plant/Line1/2:Temperature" into its segments.
func parseBrowsePath(s string) ([]pathSegment, error) {
	if s == "" {
		return nil, fmt.Errorf("browse path is empty; expected names separated by '/', such as 2:Plant/2:Press7/2:Temperature")
	}
	parts := strings.Split(strings.TrimPrefix(s, "/"), "/")
	segs := make([]pathSegment, 0, len(parts))
	for i, part := range parts {
		seg := pathSegment{ns: -1, name: part}
		if pre, rest, ok := strings.Cut(part, ":"); ok {
			if n, err := strconv.ParseUint(pre, 10, 16); err == nil {
				seg = pathSegment{ns: int(n), name: rest}
			}
		}
		if seg.name == "" {
			return nil, fmt.Errorf("browse path %q: segment %d is empty", s, i+1)
		}
		segs = append(segs, seg)
	}
	return segs, nil
}

// glob is a compiled include/exclude pattern on a browse path.
type glob struct{ re *regexp.Regexp }

// compileGlob compiles a pattern in which "*" matches within one path segment, "?" one
// character of a segment and "**" any number of whole segments.
func compileGlob(pattern string) (glob, error) {
	if pattern == "" {
		return glob{}, fmt.Errorf("pattern is empty; expected a glob such as Line1/*/Temp* or **/Speed")
	}
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch {
		case c == '*' && i+1 < len(pattern) && pattern[i+1] == '*':
			i++
			if i+1 < len(pattern) && pattern[i+1] == '/' {
				i++
				b.WriteString("(?:.*/)?") // "**/" : zero or more whole segments
			} else {
				b.WriteString(".*")
			}
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return glob{}, fmt.Errorf("pattern %q: %v", pattern, err)
	}
	return glob{re: re}, nil
}

func (g glob) match(path string) bool { return g.re.MatchString(path) }
