package units

import "testing"

func TestParseSize(t *testing.T) {
	cases := map[string]int64{
		"0": 0, "4096": 4096, "64KiB": 64 << 10, "1GiB": 1 << 30, "1.5g": 3 << 29,
		"100MB": 100e6, " 2 TiB ": 2 << 40, "512m": 512 << 20, "7b": 7,
	}
	for in, want := range cases {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "abc", "-1", "1 furlong", "1e30"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
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

func TestParseRate(t *testing.T) {
	cases := map[string]int64{"1Gbit": 125e6, "500Mbit": 62.5e6, "60MB": 60e6, "60MB/s": 60e6, "100kbit": 12500, "1GiB": 1 << 30}
	for in, want := range cases {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseRate("fast"); err == nil {
		t.Error("ParseRate accepted garbage")
	}
}
