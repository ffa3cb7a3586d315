// Package units parses and prints byte sizes and rates for flags, config
// files and reports: "64KiB", "1.5GB", "512m", "1Gbit".
package units

import (
	"fmt"
	"strconv"
	"strings"
)

var suffixes = []struct {
	s string
	m float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// ParseSize parses a byte size. A bare number is bytes; k, m, g, t and
// KiB… are powers of 1024; KB, MB… powers of 1000.
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, suf := range suffixes {
		if strings.HasSuffix(t, suf.s) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, suf.s)), suf.m
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v*mult > 1<<62 {
		return 0, fmt.Errorf("size %q: want a number with an optional unit (e.g. 512MiB, 4GiB, 100GB)", s)
	}
	return int64(v * mult), nil
}

// FormatSize prints n bytes with a binary unit.
func FormatSize(n int64) string {
	f := float64(n)
	for _, u := range []string{"B", "KiB", "MiB", "GiB", "TiB"} {
		if f < 1024 || u == "TiB" {
			if u == "B" {
				return fmt.Sprintf("%d B", n)
			}
			return fmt.Sprintf("%.1f %s", f, u)
		}
		f /= 1024
	}
	return ""
}

// FormatRate prints bytes per second as bits per second, as links are sold.
func FormatRate(bytesPerSec float64) string {
	b := bytesPerSec * 8
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", b/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", b/1e6)
	}
	return fmt.Sprintf("%.0f kbit/s", b/1e3)
}

// ParseRate parses a rate in bytes per second: a size per second ("60MB",
// "1GiB") or a bit rate ("500Mbit", "1Gbit", "100kbit").
func ParseRate(s string) (int64, error) {
	l := strings.ToLower(strings.TrimSpace(s))
	l = strings.TrimSuffix(strings.TrimSuffix(l, "/s"), "ps")
	for _, suf := range []struct {
		s string
		m float64
	}{{"gbit", 1e9 / 8}, {"mbit", 1e6 / 8}, {"kbit", 1e3 / 8}} {
		if strings.HasSuffix(l, suf.s) {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(l, suf.s)), 64)
			if err != nil || v <= 0 {
				return 0, fmt.Errorf("rate %q: want e.g. 500Mbit or 60MB", s)
			}
			return int64(v * suf.m), nil
		}
	}
	return ParseSize(l)
}
