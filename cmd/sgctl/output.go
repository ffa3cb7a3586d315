package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/units"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// progressBar draws one self-overwriting line on a terminal.
type progressBar struct {
	w     io.Writer
	on    bool
	label string
	start time.Time
}

func newProgressBar(e *env, label string) *progressBar {
	return &progressBar{w: e.stderr, on: e.isTerminal, label: label, start: time.Now()}
}

func (p *progressBar) update(pr api.Progress) {
	if !p.on || pr.Total <= 0 {
		return
	}
	frac := min(1, float64(pr.Done)/float64(pr.Total))
	const width = 30
	fill := int(frac * width)
	el := time.Since(p.start).Seconds()
	rate := float64(pr.Done) / max(el, 1e-3)
	eta := "?"
	if rate > 0 {
		eta = time.Duration(float64(pr.Total-pr.Done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r%s [%s%s] %5.1f%% %s of %s  %s  ETA %s   ", p.label,
		strings.Repeat("=", fill), strings.Repeat(" ", width-fill), frac*100,
		units.FormatSize(pr.Done), units.FormatSize(pr.Total), units.FormatRate(rate), eta)
}

func (p *progressBar) done() {
	if p.on {
		fmt.Fprintln(p.w)
	}
}

func rate(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return units.FormatRate(float64(bytes) / d.Seconds())
}

func shortID(id string) string {
	if len(id) > 16 {
		return id[:8] + "…" + id[len(id)-6:]
	}
	return id
}
