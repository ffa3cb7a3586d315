package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/sgrelay/sg/internal/units"
)

// Size is a byte-size flag value with bounds, parsed by units.ParseSize
// when the flag is set, so a bad value is a usage error naming the flag.
type Size struct {
	V        int64
	Min, Max int64 // Max 0: units.MaxSize
}

// SizeVar defines a size flag with a default and bounds.
func SizeVar(fs *pflag.FlagSet, p *Size, name string, def, min, max int64, usage string) {
	*p = Size{V: def, Min: min, Max: max}
	fs.Var(p, name, usage)
}

func (s *Size) String() string {
	if s.V == 0 {
		return "0"
	}
	return formatBytes(s.V)
}
func (s *Size) Type() string { return "size" }

func (s *Size) Set(v string) error {
	n, err := units.ParseSize(v)
	if err != nil {
		return err
	}
	hi := s.Max
	if hi == 0 {
		hi = units.MaxSize
	}
	if n < s.Min || n > hi {
		return fmt.Errorf("%s: want %s to %s, e.g. %s", v, formatBytes(s.Min), formatBytes(hi), formatBytes(max(s.Min, min(hi, 64<<10))))
	}
	s.V = n
	return nil
}

// formatBytes prints n exactly, in the largest binary unit that divides
// it, so that defaults and bounds read as an operator would type them.
func formatBytes(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"EiB", 1 << 60}, {"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// Rate is a rate flag value in bytes per second, parsed by
// units.ParseRate; 0 means unset.
type Rate struct {
	V    int64
	text string
}

// RateVar defines a rate flag with no default.
func RateVar(fs *pflag.FlagSet, p *Rate, name, usage string) { fs.Var(p, name, usage) }

func (r *Rate) String() string { return r.text }
func (r *Rate) Type() string   { return "rate" }

func (r *Rate) Set(v string) error {
	n, err := units.ParseRate(v)
	if err != nil {
		return err
	}
	r.V, r.text = n, v
	return nil
}

// Int is an integer flag value within [Min, Max].
type Int struct {
	V, Min, Max int
	Example     string
}

// IntVar defines a bounded integer flag.
func IntVar(fs *pflag.FlagSet, p *Int, name string, def, min, max int, example, usage string) {
	*p = Int{V: def, Min: min, Max: max, Example: example}
	fs.Var(p, name, usage)
}

func (i *Int) String() string { return strconv.Itoa(i.V) }
func (i *Int) Type() string   { return "int" }

func (i *Int) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < i.Min || n > i.Max {
		return fmt.Errorf("want a whole number from %d to %d, e.g. %s", i.Min, i.Max, i.Example)
	}
	i.V = n
	return nil
}
