// Package units parses and prints byte sizes and rates for flags, config
// files and reports. Every unit is read as its name says: a capital B is
// bytes and a small b or "bit" is bits, so "100Mbps" and "100Mbit" are
// 100 megabits per second while "100MB/s" is 100 megabytes per second.
// Values a person would not mean (NaN, Inf, negative, beyond an exbibyte)
// are refused rather than bent into range.
package units

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

const (
	// MaxSize bounds sizes: nothing sg handles is an exbibyte.
	MaxSize = 1 << 60
	// MaxRate bounds rates, in bytes per second: 10 Tbit/s.
	MaxRate = 10e12 / 8
)

// SizeExample and RateExample are what error messages offer.
const (
	SizeExample = "e.g. 64KiB, 512MiB or 100GB"
	RateExample = "e.g. 100Mbit (= 100Mbps), 1Gbit or 60MB/s"
)

// number is a plain decimal: ParseFloat alone would take "NaN", "Inf",
// "1e30" and hexadecimal floats.
var number = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*(.*)$`)

var prefixes = map[byte]struct{ dec, bin float64 }{
	'k': {1e3, 1 << 10}, 'm': {1e6, 1 << 20}, 'g': {1e9, 1 << 30},
	't': {1e12, 1 << 40}, 'p': {1e15, 1 << 50}, 'e': {1e18, 1 << 60},
}

func split(s string) (float64, string, bool) {
	m := number.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, "", false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, m[2], err == nil
}

// byteUnit is the multiplier of a byte unit: B, K/KB/KiB, M/MB/MiB, … A
// bare prefix letter is binary, as in qemu-img, truncate and dd.
func byteUnit(u string) (float64, bool) {
	switch {
	case u == "" || u == "B":
		return 1, true
	case len(u) > 3:
		return 0, false
	}
	p, ok := prefixes[lower(u[0])]
	if !ok {
		return 0, false
	}
	switch rest := u[1:]; rest {
	case "":
		return p.bin, true
	case "B":
		return p.dec, true
	case "iB", "IB":
		return p.bin, true
	}
	return 0, false
}

// bitUnit is the multiplier, in bits, of a bit unit: b, bit, kb, kbit, Mb,
// Mbit, …
func bitUnit(u string) (float64, bool) {
	u = strings.TrimSuffix(strings.TrimSuffix(u, "s"), "it")
	if u == "b" {
		return 1, true
	}
	if len(u) != 2 || u[1] != 'b' {
		return 0, false
	}
	p, ok := prefixes[lower(u[0])]
	return p.dec, ok
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// ParseSize parses a byte size: a whole number of bytes, or a number with
// a unit: KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB and the
// bare K, M, G, T powers of 1024. A bit unit ("100Mb") is refused: sizes
// are in bytes.
func ParseSize(s string) (int64, error) {
	v, u, ok := split(s)
	if !ok {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit, %s", s, SizeExample)
	}
	if _, bits := bitUnit(u); bits {
		return 0, fmt.Errorf("size %q is in bits: a size is in bytes, %s", s, SizeExample)
	}
	m, ok := byteUnit(u)
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q, want B, KB, KiB, MB, MiB, GB, GiB, TB or TiB, %s", s, u, SizeExample)
	}
	if v*m > MaxSize {
		return 0, fmt.Errorf("size %q: larger than an exbibyte, %s", s, SizeExample)
	}
	if m == 1 && v != float64(int64(v)) {
		return 0, fmt.Errorf("size %q: a fraction of a byte, %s", s, SizeExample)
	}
	return int64(v * m), nil
}

// ParseRate parses a rate and returns bytes per second. It takes bits per
// second ("100Mbit", "100Mbps", "100Mb/s", "1Gbit", "500kbit") or bytes
// per second ("60MB/s", "60MBps", "1GiB/s"; "60MB" alone too). A bare
// number is refused: it does not say whether it counts bits or bytes.
func ParseRate(s string) (int64, error) {
	v, u, ok := split(s)
	if !ok {
		return 0, fmt.Errorf("rate %q: want a number with a unit, %s", s, RateExample)
	}
	if u == "" {
		return 0, fmt.Errorf("rate %q: give a unit of bits or bytes per second, %s", s, RateExample)
	}
	u, perSec := strings.CutSuffix(u, "/s")
	if !perSec {
		u, _ = strings.CutSuffix(u, "ps")
	}
	var bytesPerSec float64
	if m, ok := bitUnit(u); ok {
		bytesPerSec = v * m / 8
	} else if m, ok := byteUnit(u); ok && u != "" && (u == "B" || len(u) > 1) {
		bytesPerSec = v * m
	} else {
		return 0, fmt.Errorf("rate %q: unknown unit, %s", s, RateExample)
	}
	switch {
	case bytesPerSec < 1:
		return 0, fmt.Errorf("rate %q: want at least 1 byte per second, %s", s, RateExample)
	case bytesPerSec > MaxRate:
		return 0, fmt.Errorf("rate %q: above 10 Tbit/s, %s", s, RateExample)
	}
	return int64(bytesPerSec), nil
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
