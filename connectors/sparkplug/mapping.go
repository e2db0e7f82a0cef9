package sparkplug

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The texts a rule matches; a template part refers to a submatch of one of them or to the
// whole text.
const (
	srcMetric = iota
	srcGroup
	srcEdgeNode
	srcDevice
	numSources
)

var sourceNames = [numSources]string{"metric", "group", "edge_node", "device"}

// template is a parsed rule template: literal text and references.
type template []templatePart

type templatePart struct {
	lit string
	ref bool
	src int // srcMetric ...
	idx int // submatch index; 0: the whole text
}

// parseTemplate parses s against the rule's expressions (indexed by src*, nil: none).
// $n and ${n} refer to the metric expression's submatches, ${name} to a named submatch of
// any expression (the metric's first), and ${group}, ${edge_node}, ${device}, ${metric} to
// the whole texts.
func parseTemplate(s string, res *[numSources]*regexp.Regexp) (template, error) {
	var t template
	var lit strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			lit.WriteByte(s[i])
			continue
		}
		rest := s[i+1:]
		var name string
		switch {
		case strings.HasPrefix(rest, "$"):
			lit.WriteByte('$')
			i++
			continue
		case strings.HasPrefix(rest, "{"):
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return nil, fmt.Errorf("template %q: unclosed ${ at byte %d", s, i)
			}
			name = rest[1:end]
			i += end + 1
		default:
			n := 0
			for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
				n++
			}
			if n == 0 {
				return nil, fmt.Errorf("template %q: '$' at byte %d is followed by neither a number nor {name}; write $$ for a '$'", s, i)
			}
			name = rest[:n]
			i += n
		}
		part, err := resolveRef(name, res)
		if err != nil {
			return nil, fmt.Errorf("template %q: %v", s, err)
		}
		if lit.Len() > 0 {
			t = append(t, templatePart{lit: lit.String()})
			lit.Reset()
		}
		t = append(t, part)
	}
	if lit.Len() > 0 {
		t = append(t, templatePart{lit: lit.String()})
	}
	return t, nil
}

func resolveRef(name string, res *[numSources]*regexp.Regexp) (templatePart, error) {
	if n, err := strconv.Atoi(name); err == nil {
		subexps := 0
		if res[srcMetric] != nil {
			subexps = res[srcMetric].NumSubexp()
		}
		if n < 1 || n > subexps {
			return templatePart{}, fmt.Errorf("$%d refers to no submatch of the metric expression (it has %d)", n, subexps)
		}
		return templatePart{ref: true, src: srcMetric, idx: n}, nil
	}
	for src, re := range res {
		if re != nil {
			if n := re.SubexpIndex(name); n > 0 {
				return templatePart{ref: true, src: src, idx: n}, nil
			}
		}
	}
	for src, n := range sourceNames {
		if n == name {
			return templatePart{ref: true, src: src}, nil
		}
	}
	return templatePart{}, fmt.Errorf("${%s} is neither a named submatch of the rule's expressions nor one of metric, group, edge_node, device", name)
}

// expand renders t. texts are the matched texts and subs their submatch indexes (nil when
// the rule has no expression for that text).
func (t template) expand(b *strings.Builder, texts *[numSources]string, subs *[numSources][]int) string {
	b.Reset()
	for _, p := range t {
		switch {
		case !p.ref:
			b.WriteString(p.lit)
		case p.idx == 0:
			b.WriteString(texts[p.src])
		default:
			sub := subs[p.src]
			if 2*p.idx+1 < len(sub) && sub[2*p.idx] >= 0 {
				b.WriteString(texts[p.src][sub[2*p.idx]:sub[2*p.idx+1]])
			}
		}
	}
	return b.String()
}

// rule is a compiled Rule.
type rule struct {
	res                            [numSources]*regexp.Regexp
	factory, line, machine, signal template
}

func compileRule(r Rule) (rule, error) {
	var cr rule
	for src, expr := range [numSources]string{r.Metric, r.Group, r.EdgeNode, r.Device} {
		re, err := compileRegexp(expr)
		if err != nil {
			return rule{}, fmt.Errorf("%s: %v", sourceNames[src], err)
		}
		cr.res[src] = re
	}
	for _, f := range []struct {
		key  string
		tmpl string
		dst  *template
	}{{"factory", r.Factory, &cr.factory}, {"line", r.Line, &cr.line}, {"machine", r.Machine, &cr.machine}, {"signal", r.Signal, &cr.signal}} {
		t, err := parseTemplate(f.tmpl, &cr.res)
		if err != nil {
			return rule{}, fmt.Errorf("%s: %v", f.key, err)
		}
		*f.dst = t
	}
	return cr, nil
}

// mapper computes the names of a point from a metric's origin and name.
type mapper struct {
	groupAs   string
	factory   string
	separator string
	exclude   []*regexp.Regexp
	rules     []rule
}

func newMapper(m Mapping) (*mapper, error) {
	mp := &mapper{groupAs: m.GroupAs, factory: m.Factory, separator: m.Separator}
	for _, e := range m.Exclude {
		re, err := compileRegexp(e)
		if err != nil {
			return nil, err
		}
		if re != nil {
			mp.exclude = append(mp.exclude, re)
		}
	}
	for i, r := range m.Rules {
		cr, err := compileRule(r)
		if err != nil {
			return nil, fmt.Errorf("map.rules[%d].%v", i, err)
		}
		mp.rules = append(mp.rules, cr)
	}
	return mp, nil
}

// excluded reports whether metric is not to be stored.
func (mp *mapper) excluded(metric string) bool {
	if metric == bdSeqMetric {
		return true
	}
	for _, re := range mp.exclude {
		if re.MatchString(metric) {
			return true
		}
	}
	return false
}

// metricNames is where a metric comes from.
type metricNames struct {
	group, edgeNode, device string
}

// pointNames are the names a metric's points carry.
type pointNames struct {
	factory, line, machine, signal string
}

// names maps a metric: the first rule whose expressions all match sets what its templates
// give (an empty result keeps the default).
func (mp *mapper) names(n *metricNames, metric string) pointNames {
	out := pointNames{factory: mp.factory, machine: n.device}
	if out.machine == "" {
		out.machine = n.edgeNode
	}
	switch mp.groupAs {
	case GroupAsLine:
		out.line = n.group
	case GroupAsFactory:
		if out.factory == "" {
			out.factory = n.group
		}
	}
	out.signal = strings.ReplaceAll(metric, "/", mp.separator)
	texts := [numSources]string{metric, n.group, n.edgeNode, n.device}
	var b strings.Builder
rules:
	for _, r := range mp.rules {
		var subs [numSources][]int
		for src, re := range r.res {
			if re == nil {
				continue
			}
			if subs[src] = re.FindStringSubmatchIndex(texts[src]); subs[src] == nil {
				continue rules
			}
		}
		for _, f := range []struct {
			dst *string
			t   template
		}{{&out.factory, r.factory}, {&out.line, r.line}, {&out.machine, r.machine}, {&out.signal, r.signal}} {
			if len(f.t) > 0 {
				if v := f.t.expand(&b, &texts, &subs); v != "" {
					*f.dst = v
				}
			}
		}
		break
	}
	return out
}
