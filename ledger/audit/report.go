package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	htmltemplate "html/template"
	"slices"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/millwright-io/millwright/ledger"

	_ "embed"
)

// Report formats.
const (
	FormatMarkdown = "md"
	FormatHTML     = "html"
	FormatJSON     = "json"
)

// ReportFormats lists the formats Report accepts.
var ReportFormats = []string{FormatMarkdown, FormatHTML, FormatJSON}

//go:embed report.md.tmpl
var mdTemplate string

//go:embed report.html.tmpl
var htmlTemplate string

var reportFuncs = map[string]any{
	"short":   short,
	"metrics": FormatMetrics,
	"params":  formatParams,
	"time":    func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"refs":    joinRefs,
	"join":    strings.Join,
	"section": func(key string) Section {
		for _, s := range Sections {
			if s.Key == key {
				return s
			}
		}
		panic("audit: no report section " + key) // a template bug
	},
	"span": func(b ledger.DatasetSnapshot) string {
		from, to := snapshotSpan(b)
		return from.Format(time.RFC3339) + " .. " + to.Format(time.RFC3339)
	},
	"dp": func(d *ledger.DPBudget) string {
		if d == nil {
			return "none"
		}
		return fmt.Sprintf("epsilon %g, delta %g", d.Epsilon, d.Delta)
	},
	"sub": func(a, b int) int { return a - b },
	"md":  mdEscape,
}

var (
	mdTmpl   = texttemplate.Must(texttemplate.New("report.md").Funcs(reportFuncs).Parse(mdTemplate))
	htmlTmpl = htmltemplate.Must(htmltemplate.New("report.html").Funcs(reportFuncs).Parse(htmlTemplate))
)

// mdEscape makes record text inert in Markdown: it escapes the characters Markdown and
// HTML give meaning to, and flattens line breaks so a value cannot break a table.
func mdEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\', '`', '*', '_', '[', ']', '|', '#':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '\n', '\r':
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Report renders the evidence pack of ref (see Collect) as Markdown ("md"), HTML ("html",
// every value from a record escaped) or JSON ("json", the Evidence structure). An error
// wraps ledger.ErrNotFound when no record produced ref.
func Report(ctx context.Context, q ledger.Querier, ref ledger.ModelRef, format string, opts Options) ([]byte, error) {
	if !slices.Contains(ReportFormats, format) {
		return nil, fmt.Errorf("report format %q is not supported, expected one of %s", format, strings.Join(ReportFormats, ", "))
	}
	ev, err := Collect(ctx, q, ref, opts)
	if err != nil {
		return nil, err
	}
	return RenderReport(ev, format)
}

// RenderReport renders an evidence pack in format (see Report).
func RenderReport(ev Evidence, format string) ([]byte, error) {
	var buf bytes.Buffer
	var err error
	switch format {
	case FormatMarkdown:
		err = mdTmpl.Execute(&buf, ev)
	case FormatHTML:
		err = htmlTmpl.Execute(&buf, ev)
	case FormatJSON:
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		err = enc.Encode(ev)
	default:
		return nil, fmt.Errorf("report format %q is not supported, expected one of %s", format, strings.Join(ReportFormats, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("render %s report of %s: %w", format, ev.Model, err)
	}
	return buf.Bytes(), nil
}
