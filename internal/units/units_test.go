package units

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	cases := map[string]int64{
		"0": 0, "4096": 4096, "64KiB": 64 << 10, "1GiB": 1 << 30, "1.5g": 3 << 29,
		"100MB": 100e6, " 2 TiB ": 2 << 40, "512m": 512 << 20, "7B": 7, "4kB": 4000,
		"4KB": 4000, "4K": 4096, "1EiB": 1 << 60,
	}
	for in, want := range cases {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for bad, why := range map[string]string{
		"": "want a number", "abc": "want a number", "-1": "want a number", "1 furlong": "unknown unit",
		"1e30": "unknown unit", "NaN": "want a number", "Inf": "want a number", "+Inf": "want a number",
		"0x10": "unknown unit", "100Mb": "in bits", "7b": "in bits", "1Gbit": "in bits",
		"1.5": "fraction", "2EiB": "exbibyte", "99999999999999999999": "exbibyte",
	} {
		_, err := ParseSize(bad)
		if err == nil || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "e.g.") {
			t.Errorf("ParseSize(%q): %v; want an error saying %q with an example", bad, err, why)
		}
	}
}

func TestFormat(t *testing.T) {
	if s := FormatSize(3 << 29); s != "1.5 GiB" {
		t.Errorf("FormatSize = %q", s)
	}
	if s := FormatRate(125e6); s != "1.00 Gbit/s" {
		t.Errorf("FormatRate = %q", s)
	}
}

// Every spelling of a rate means what it says: a b is a bit, a B a byte.
func TestParseRate(t *testing.T) {
	cases := map[string]int64{
		"100Mbit": 12.5e6, "100Mbps": 12.5e6, "100Mb/s": 12.5e6, "100Mbit/s": 12.5e6, "100Mb": 12.5e6,
		"100mbit": 12.5e6, "1Gbit": 125e6, "1Gbps": 125e6, "500kbit": 62500, "100Kbps": 12500, "8bps": 1,
		"60MB/s": 60e6, "60MBps": 60e6, "60MB": 60e6, "1GiB/s": 1 << 30, "10MiB/s": 10 << 20, "1000B/s": 1000,
		"10Tbit": 1.25e12,
	}
	for in, want := range cases {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"fast", "", "100", "NaN", "Inf", "-5Gbit", "0Mbit", "1bit", "100M", "100M/s",
		"11Tbit", "1e3Mbit", "100furlongs/s", "ps"} {
		if _, err := ParseRate(bad); err == nil || !strings.Contains(err.Error(), "e.g.") {
			t.Errorf("ParseRate(%q): %v; want an error with an example", bad, err)
		}
	}
}
