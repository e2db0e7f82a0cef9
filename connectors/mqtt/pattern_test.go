package mqtt

import (
	"testing"
)

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in, filter string
		captures   map[field]int // field -> level index
	}{
		{"plant/{line}/{machine}/telemetry", "plant/+/+/telemetry", map[field]int{fieldLine: 1, fieldMachine: 2}},
		{"sensors/{machine}/{signal}", "sensors/+/+", map[field]int{fieldMachine: 1, fieldSignal: 2}},
		{"{factory}/+/{machine}/#", "+/+/+/#", map[field]int{fieldFactory: 0, fieldMachine: 2}},
		{"#", "#", nil},
		{"+", "+", nil},
		{"a//b", "a//b", nil},
		{"/a", "/a", nil},
		{"$SYS/broker/{signal}", "$SYS/broker/+", map[field]int{fieldSignal: 2}},
	}
	for _, tt := range tests {
		p, err := parsePattern(tt.in)
		if err != nil {
			t.Errorf("parsePattern(%q): %v", tt.in, err)
			continue
		}
		if p.filter != tt.filter {
			t.Errorf("parsePattern(%q).filter = %q, want %q", tt.in, p.filter, tt.filter)
		}
		for f := range numFields {
			want, ok := tt.captures[f]
			if !ok {
				want = -1
			}
			if p.captureLevel[f] != want {
				t.Errorf("parsePattern(%q): {%s} at level %d, want %d", tt.in, fieldNames[f], p.captureLevel[f], want)
			}
		}
	}
}

func TestParsePatternErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `is empty; expected an MQTT topic filter such as "plant/{line}/{machine}/telemetry"`},
		{"a/{lin}", `"a/{lin}": capture {lin} is not one of factory, line, machine, signal`},
		{"a/{}", `"a/{}": capture {} is not one of factory, line, machine, signal`},
		{"{line}/{line}", `"{line}/{line}": capture {line} appears twice`},
		{"a/{line}x", `"a/{line}x": level 2 "{line}x": a capture must be a whole level, like {machine}`},
		{"a/x{line}", `"a/x{line}": level 2 "x{line}": a capture must be a whole level, like {machine}`},
		{"a/b+", `"a/b+": level 2 "b+": wildcards "+" and "#" must be a whole level`},
		{"a/#b", `"a/#b": level 2 "#b": wildcards "+" and "#" must be a whole level`},
		{"a/#/b", `"a/#/b": "#" is allowed only as the whole last level`},
		{"a\x00b", `"a\x00b" contains a NUL character`},
		{"$share/g/a/b", `"$share/g/a/b": write the plain filter; shared subscriptions are set up by connections and share_group`},
	}
	for _, tt := range tests {
		_, err := parsePattern(tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("parsePattern(%q) error = %v\nwant %s", tt.in, err, tt.want)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern, topic string
		match          bool
		caps           [numFields]string // factory, line, machine, signal
	}{
		{"plant/{line}/{machine}/telemetry", "plant/l1/m1/telemetry", true, [numFields]string{"", "l1", "m1", ""}},
		{"plant/{line}/{machine}/telemetry", "plant/l1/m1/telemetry/x", false, [numFields]string{}},
		{"plant/{line}/{machine}/telemetry", "plant/l1/m1", false, [numFields]string{}},
		{"plant/{line}/{machine}/telemetry", "plant/l1//telemetry", true, [numFields]string{"", "l1", "", ""}},
		{"plant/{line}/{machine}/telemetry", "Plant/l1/m1/telemetry", false, [numFields]string{}},
		{"sensors/{machine}/{signal}", "sensors/m1/temp", true, [numFields]string{"", "", "m1", "temp"}},
		{"sensors/+/{signal}", "sensors/m1/temp", true, [numFields]string{"", "", "", "temp"}},
		{"{factory}/#", "north/a/b/c", true, [numFields]string{"north", "", "", ""}},
		{"{factory}/#", "north", true, [numFields]string{"north", "", "", ""}}, // "#" matches the parent
		{"a/#", "a", true, [numFields]string{}},
		{"a/#", "a/", true, [numFields]string{}},
		{"a/#", "ab", false, [numFields]string{}},
		{"#", "a/b", true, [numFields]string{}},
		{"#", "$SYS/uptime", false, [numFields]string{}},        // wildcards do not match $ topics
		{"+/uptime", "$SYS/uptime", false, [numFields]string{}}, // ...at the first level
		{"{machine}/x", "$SYS/x", false, [numFields]string{}},   // captures are wildcards too
		{"$SYS/#", "$SYS/uptime", true, [numFields]string{}},    // a literal $ level does
		{"a/+/c", "a//c", true, [numFields]string{}},            // "+" matches an empty level
		{"/{machine}", "/m", true, [numFields]string{"", "", "m", ""}},
		{"+", "", true, [numFields]string{}},
		{"a", "a/b", false, [numFields]string{}},
	}
	for _, tt := range tests {
		p, err := parsePattern(tt.pattern)
		if err != nil {
			t.Fatal(err)
		}
		var caps [numFields]string
		got := p.match(tt.topic, &caps)
		if got != tt.match {
			t.Errorf("%q matches %q = %v, want %v", tt.pattern, tt.topic, got, tt.match)
			continue
		}
		if got && caps != tt.caps {
			t.Errorf("%q on %q captured %q, want %q", tt.pattern, tt.topic, caps, tt.caps)
		}
	}
}

func TestPatternSubscription(t *testing.T) {
	p, err := parsePattern("plant/{line}/{machine}/#")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.subscription(""), "plant/+/+/#"; got != want {
		t.Errorf("subscription(\"\") = %q, want %q", got, want)
	}
	if got, want := p.subscription("mw"), "$share/mw/plant/+/+/#"; got != want {
		t.Errorf("subscription(\"mw\") = %q, want %q", got, want)
	}
	// A message of a shared subscription carries the publisher's topic, which the pattern
	// matches as usual.
	var caps [numFields]string
	if !p.match("plant/l1/m1/a/b", &caps) || caps[fieldMachine] != "m1" {
		t.Errorf("match of a shared-subscription message failed: %q", caps)
	}
}

func TestPatternMatchAllocatesNothing(t *testing.T) {
	p, err := parsePattern("plant/{line}/{machine}/telemetry")
	if err != nil {
		t.Fatal(err)
	}
	var caps [numFields]string
	if n := testing.AllocsPerRun(100, func() { p.match("plant/l1/m1/telemetry", &caps) }); n != 0 {
		t.Errorf("match allocates %v times per call", n)
	}
}
