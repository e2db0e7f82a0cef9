package opcua

import (
	"fmt"
	"regexp"
	"strings"
)

// names are the four names of the points of one item.
type names struct {
	factory, line, machine, signal string
}

// rule is a compiled mapping rule.
type rule struct {
	re        *regexp.Regexp
	templates [4]string // factory, line, machine, signal
}

// mapper turns item paths into names by the configured rules.
type mapper struct {
	rules []rule
}

func newMapper(rs []Rule) (*mapper, error) {
	m := &mapper{rules: make([]rule, 0, len(rs))}
	for i, r := range rs {
		re, err := regexp.Compile(r.Match)
		if err != nil {
			return nil, fmt.Errorf("mapping[%d].match: %w", i, err)
		}
		m.rules = append(m.rules, rule{re: re, templates: [4]string{r.Factory, r.Line, r.Machine, r.Signal}})
	}
	return m, nil
}

var groupNames = [4]string{"factory", "line", "machine", "signal"}

// resolve names an item: fixed names win, then the first matching rule's groups and
// templates; without a matching rule the signal is the path's last segment and the machine
// the one before. It fails when no machine or no signal results.
func (m *mapper) resolve(path string, fixed names) (names, error) {
	out := [4]string{fixed.factory, fixed.line, fixed.machine, fixed.signal}
	matched := -1
	for i, r := range m.rules {
		sub := r.re.FindStringSubmatchIndex(path)
		if sub == nil {
			continue
		}
		matched = i
		for f := range 4 {
			if out[f] != "" {
				continue
			}
			if t := r.templates[f]; t != "" {
				out[f] = string(r.re.ExpandString(nil, t, path, sub))
			} else if g := r.re.SubexpIndex(groupNames[f]); g >= 0 && sub[2*g] >= 0 {
				out[f] = path[sub[2*g]:sub[2*g+1]]
			}
		}
		break
	}
	if matched < 0 {
		segs := strings.Split(path, "/")
		if out[3] == "" {
			out[3] = segs[len(segs)-1]
		}
		if out[2] == "" && len(segs) >= 2 {
			out[2] = segs[len(segs)-2]
		}
	}
	for _, f := range [...]int{2, 3} {
		switch {
		case out[f] != "":
		case matched >= 0:
			return names{}, fmt.Errorf("item %q has no %s: mapping[%d].match %q matches it but gives none (expected a %q group or template that is not empty)",
				path, groupNames[f], matched, m.rules[matched].re, groupNames[f])
		default:
			return names{}, fmt.Errorf("item %q has no %s: no mapping rule matches it and it fixes none", path, groupNames[f])
		}
	}
	return names{out[0], out[1], out[2], out[3]}, nil
}
