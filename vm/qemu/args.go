package qemu

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrUnsupported is a guest whose command line the driver cannot move.
var ErrUnsupported = errors.New("unsupported QEMU configuration")

// flagOptions take no argument; every other option takes exactly one.
var flagOptions = map[string]bool{
	"S": true, "daemonize": true, "nographic": true, "no-reboot": true, "no-shutdown": true,
	"enable-kvm": true, "snapshot": true, "nodefaults": true, "no-user-config": true,
	"no-hpet": true, "no-acpi": true, "s": true, "full-screen": true, "no-fd-bootchk": true,
	"only-migratable": true, "preconfig": true,
}

// Machine is a guest's command line, parsed far enough to find every host
// path in it.
type Machine struct {
	Binary string   // argv[0]
	Opts   []Option // the rest, in order
	Memory []Memory // file-backed guest RAM, in command-line order
	Drives []Drive  // disk images, in command-line order
	Kernel string   // -kernel path, if any
	Initrd string   // -initrd path, if any
}

// Option is one command-line option: "-name value" (Value) or a flag.
type Option struct {
	Name  string // without dashes
	Value string
	Flag  bool
}

// Memory is one memory-backend-file object.
type Memory struct {
	ID     string
	Path   string
	Size   int64
	Region string // region name in the eviction
	opt    int
}

// Drive is one -drive with a file= path.
type Drive struct {
	Path   string
	Format string
	Region string
	opt    int
}

// ParseArgs parses a QEMU argv (argv[0] is the binary). It refuses what
// the driver cannot move: guest RAM not in a shared memory-backend-file
// (it would travel inside the device state), disks given other than by
// -drive file=PATH, and an existing -incoming.
func ParseArgs(argv []string) (*Machine, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: empty command line", ErrUnsupported)
	}
	m := &Machine{Binary: argv[0]}
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if !strings.HasPrefix(a, "-") {
			return nil, fmt.Errorf("%w: unexpected argument %q (a disk image given without -drive?)", ErrUnsupported, a)
		}
		name := strings.TrimLeft(a, "-")
		if flagOptions[name] {
			m.Opts = append(m.Opts, Option{Name: name, Flag: true})
			continue
		}
		if i+1 >= len(argv) {
			return nil, fmt.Errorf("%w: option -%s has no value", ErrUnsupported, name)
		}
		i++
		m.Opts = append(m.Opts, Option{Name: name, Value: argv[i]})
	}
	var memIDs []string
	for i, o := range m.Opts {
		switch o.Name {
		case "object":
			kv := parseKV(o.Value)
			if kv.first() != "memory-backend-file" && kv.get("qom-type") != "memory-backend-file" {
				if strings.HasPrefix(kv.first(), "memory-backend") || strings.HasPrefix(kv.get("qom-type"), "memory-backend") {
					return nil, fmt.Errorf("%w: -object %s: guest RAM must be a memory-backend-file with share=on (x-ignore-shared keeps it out of the device state)", ErrUnsupported, o.Value)
				}
				continue
			}
			if kv.get("share") != "on" {
				return nil, fmt.Errorf("%w: -object %s: share=on is required (x-ignore-shared skips only shared RAM)", ErrUnsupported, o.Value)
			}
			path := kv.get("mem-path")
			if !filepath.IsAbs(path) {
				return nil, fmt.Errorf("%w: -object %s: mem-path must be an absolute file path", ErrUnsupported, o.Value)
			}
			size, err := parseSize(kv.get("size"))
			if err != nil {
				return nil, fmt.Errorf("%w: -object %s: size: %w", ErrUnsupported, o.Value, err)
			}
			m.Memory = append(m.Memory, Memory{ID: kv.get("id"), Path: path, Size: size, opt: i})
			memIDs = append(memIDs, kv.get("id"))
		case "drive":
			kv := parseKV(o.Value)
			file := kv.get("file")
			if file == "" {
				continue // an empty drive (a CD-ROM tray): nothing to move
			}
			if !filepath.IsAbs(file) || strings.Contains(file, ":") {
				return nil, fmt.Errorf("%w: -drive %s: file must be an absolute path to an image (not a URL or protocol)", ErrUnsupported, o.Value)
			}
			m.Drives = append(m.Drives, Drive{Path: file, Format: kv.get("format"), opt: i})
		case "kernel":
			m.Kernel = o.Value
		case "initrd":
			m.Initrd = o.Value
		case "hda", "hdb", "hdc", "hdd", "cdrom", "blockdev", "pflash", "mtdblock", "sd":
			return nil, fmt.Errorf("%w: -%s: give disks as -drive file=PATH", ErrUnsupported, o.Name)
		case "incoming":
			return nil, fmt.Errorf("%w: the guest is itself waiting for an incoming migration (-incoming)", ErrUnsupported)
		case "mem-path", "mem-prealloc":
			return nil, fmt.Errorf("%w: -%s: use -object memory-backend-file,share=on with -machine memory-backend=", ErrUnsupported, o.Name)
		}
	}
	if len(m.Memory) == 0 {
		return nil, fmt.Errorf("%w: no -object memory-backend-file: guest RAM must be a shared memory-backend-file (-object memory-backend-file,id=mem,size=...,mem-path=FILE,share=on -machine memory-backend=mem)", ErrUnsupported)
	}
	for i := range m.Memory {
		m.Memory[i].Region = indexed("mem", i, len(m.Memory))
	}
	for i := range m.Drives {
		m.Drives[i].Region = fmt.Sprintf("disk%d", i)
	}
	return m, nil
}

func indexed(base string, i, n int) string {
	if n == 1 {
		return base
	}
	return fmt.Sprintf("%s%d", base, i)
}

// Placement says where the destination finds each region and keeps the
// guest's own files.
type Placement struct {
	File   func(region string) string // a region as a file (FUSE view or local copy)
	Disk   func(region string) string // a disk region as a -drive file= value
	RunDir string                     // QMP socket, serial log, pid file
}

// QMPSocket and SerialLog are where a resumed guest's monitor and first
// serial port live in its run directory.
func QMPSocket(runDir string) string { return filepath.Join(runDir, "qmp.sock") }
func SerialLog(runDir string) string { return filepath.Join(runDir, "serial.log") }

// DestinationArgs is the command line for the destination: the same
// machine with every host path replaced, the monitor on the run
// directory's QMP socket, the first serial port logged there, stopped
// (-S) and waiting for its state (-incoming defer).
func (m *Machine) DestinationArgs(p Placement) []string {
	out := []string{}
	serials := 0
	for i, o := range m.Opts {
		v := o.Value
		switch o.Name {
		case "object":
			for _, mem := range m.Memory {
				if mem.opt == i {
					v = parseKV(v).with("mem-path", p.File(mem.Region)).String()
				}
			}
		case "drive":
			for _, d := range m.Drives {
				if d.opt == i {
					v = parseKV(v).with("file", p.Disk(d.Region)).String()
				}
			}
		case "kernel":
			v = p.File("kernel")
		case "initrd":
			v = p.File("initrd")
		case "qmp", "qmp-pretty", "monitor", "mon", "daemonize", "incoming", "S", "pidfile":
			continue // ours replace them
		case "nographic":
			// Its stdio console cannot outlive a daemonized QEMU; the
			// serial port goes to the run directory instead.
			out = append(out, "-display", "none")
			continue
		case "D":
			v = filepath.Join(p.RunDir, "qemu-debug.log")
		case "serial":
			if serials == 0 {
				v = "file:" + SerialLog(p.RunDir)
			} else {
				v = "null"
			}
			serials++
		case "chardev":
			kv := parseKV(v)
			for _, k := range []string{"path", "logfile"} {
				if kv.get(k) != "" {
					kv = kv.with(k, filepath.Join(p.RunDir, kv.get("id")+"-"+k))
				}
			}
			v = kv.String()
		}
		if o.Flag {
			out = append(out, "-"+o.Name)
		} else {
			out = append(out, "-"+o.Name, v)
		}
	}
	return append(out, "-qmp", "unix:"+QMPSocket(p.RunDir)+",server=on,wait=off", "-monitor", "none",
		"-S", "-incoming", "defer")
}

// kvList is a QEMU option string: comma-separated key=value pairs where
// ",," is a literal comma; the first item may be a bare value.
type kvList []kvItem

type kvItem struct{ key, value string }

func parseKV(s string) kvList {
	var out kvList
	var cur strings.Builder
	flush := func() {
		item := cur.String()
		cur.Reset()
		k, v, ok := strings.Cut(item, "=")
		if !ok {
			out = append(out, kvItem{value: item})
			return
		}
		out = append(out, kvItem{key: k, value: v})
	}
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			flush()
			continue
		}
		cur.WriteByte(s[i])
	}
	flush()
	return out
}

func (l kvList) first() string {
	if len(l) > 0 && l[0].key == "" {
		return l[0].value
	}
	return ""
}

func (l kvList) get(k string) string {
	for _, it := range l {
		if it.key == k {
			return it.value
		}
	}
	return ""
}

func (l kvList) with(k, v string) kvList {
	out := append(kvList{}, l...)
	for i := range out {
		if out[i].key == k {
			out[i].value = v
			return out
		}
	}
	return append(out, kvItem{key: k, value: v})
}

func (l kvList) String() string {
	parts := make([]string, len(l))
	for i, it := range l {
		v := strings.ReplaceAll(it.value, ",", ",,")
		if it.key == "" {
			parts[i] = v
		} else {
			parts[i] = it.key + "=" + v
		}
	}
	return strings.Join(parts, ",")
}

// parseSize reads a QEMU size: bytes, or a number with k/M/G/T suffix
// (powers of 1024).
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("missing")
	}
	mult := int64(1)
	switch s[len(s)-1] {
	case 'k', 'K':
		mult = 1 << 10
	case 'M', 'm':
		mult = 1 << 20
	case 'G', 'g':
		mult = 1 << 30
	case 'T', 't':
		mult = 1 << 40
	case 'B', 'b':
		mult = 1
	}
	num := s
	if mult != 1 || s[len(s)-1] == 'B' || s[len(s)-1] == 'b' {
		num = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
