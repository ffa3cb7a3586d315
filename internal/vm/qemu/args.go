package qemu

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ErrUnsupported is a guest whose command line the driver cannot move.
var ErrUnsupported = errors.New("unsupported QEMU configuration")

// Machine is a guest's command line at the source, parsed into its
// description (what travels) and its host files (what becomes regions).
type Machine struct {
	Guest  Description
	Memory []Memory // file-backed guest RAM, in command-line order
	Drives []Drive  // disk images, in command-line order
	Kernel string   // -kernel path, if any
	Initrd string   // -initrd path, if any
}

// Memory is one memory-backend-file's host file.
type Memory struct {
	Path   string
	Size   int64
	Region string
}

// Drive is one disk image's host file.
type Drive struct {
	Path   string
	Region string
}

// localOptions are the source's own business: how its QEMU is monitored,
// shown, logged, confined and daemonized. They do not travel; the
// destination sets its own. flagLocal take no value.
var (
	localOptions = []string{"qmp", "qmp-pretty", "monitor", "pidfile", "display", "serial", "sandbox", "runas", "run-with", "D", "name"}
	flagLocal    = []string{"daemonize", "S", "nographic"}
)

// binaryRE is the name a guest's QEMU must have.
var binaryRE = regexp.MustCompile(`^qemu-system-([a-z0-9_]+)$`)

// ParseArgs parses a guest's QEMU argv (argv[0] is the binary) into its
// description, through the allow-list (Description.Check): an option or
// key it does not know, a duplicated key, or one that names a host path
// other than the guest's memory, disks, kernel and initrd is refused
// with a message naming it. It also refuses what the driver cannot move:
// guest RAM not in a shared memory-backend-file (it would travel inside
// the device state), disks given other than by -drive file=PATH, and an
// existing -incoming.
func ParseArgs(argv []string) (*Machine, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: empty command line", ErrUnsupported)
	}
	bin := binaryRE.FindStringSubmatch(filepath.Base(argv[0]))
	if bin == nil {
		return nil, fmt.Errorf("%w: program %q is not a QEMU system emulator (qemu-system-<arch>)", ErrRefused, argv[0])
	}
	m := &Machine{Guest: Description{Arch: bin[1]}}
	d := &m.Guest
	seen := map[string]bool{}
	once := func(name string) error {
		if seen[name] {
			return fmt.Errorf("%w: option -%s given twice", ErrRefused, name)
		}
		seen[name] = true
		return nil
	}
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if !strings.HasPrefix(a, "-") {
			return nil, fmt.Errorf("%w: unexpected argument %q (a disk image given without -drive?)", ErrUnsupported, a)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if slices.Contains(flagLocal, name) || slices.Contains(flags, name) || name == "enable-kvm" {
			switch {
			case name == "enable-kvm":
				if err := once("accel"); err != nil {
					return nil, err
				}
				d.Accel = Props{{"accel", "kvm"}}
			case slices.Contains(flags, name):
				if err := once(name); err != nil {
					return nil, err
				}
				d.Flags = append(d.Flags, name)
			}
			continue
		}
		if i+1 >= len(argv) {
			return nil, fmt.Errorf("%w: option -%s has no value", ErrUnsupported, name)
		}
		i++
		if err := m.option(name, argv[i], once); err != nil {
			return nil, err
		}
	}
	if len(d.Memory) == 0 {
		return nil, fmt.Errorf("%w: no -object memory-backend-file: guest RAM must be a shared memory-backend-file (-object memory-backend-file,id=mem,size=...,mem-path=FILE,share=on -machine memory-backend=mem)", ErrUnsupported)
	}
	for i := range m.Memory {
		m.Memory[i].Region = MemoryRegion(i, len(m.Memory))
	}
	for i := range m.Drives {
		m.Drives[i].Region = DiskRegion(i)
	}
	if err := d.Check(); err != nil {
		return nil, err
	}
	if !slices.Contains(d.Flags, "nodefaults") {
		// The destination always runs QEMU with -nodefaults (a default NIC
		// would be an unrestricted user network): the default devices of a
		// guest without it would not be there to load its device state into.
		return nil, fmt.Errorf("%w: no -nodefaults: the destination creates no default device (NIC, VGA, CD-ROM, ...), so this guest's device state would not load there; start it with -nodefaults and its devices named", ErrUnsupported)
	}
	return m, nil
}

// option takes one "-name value" into m.
func (m *Machine) option(name, v string, once func(string) error) error {
	d := &m.Guest
	switch name {
	case "machine", "M":
		if err := once("machine"); err != nil {
			return err
		}
		ps, err := parseProps(name, v, "type")
		d.Machine = ps
		return err
	case "accel":
		if err := once("accel"); err != nil {
			return err
		}
		ps, err := parseProps(name, v, "accel")
		d.Accel = ps
		return err
	case "cpu":
		if err := once(name); err != nil {
			return err
		}
		if strings.Contains(v, ",") {
			return fmt.Errorf("%w: -cpu %s: CPU properties are not on the allow-list (a model name only)", ErrRefused, v)
		}
		d.CPU = v
	case "smp":
		if err := once(name); err != nil {
			return err
		}
		ps, err := parseProps(name, v, "cpus")
		d.SMP = ps
		return err
	case "m":
		if err := once(name); err != nil {
			return err
		}
		size, err := parseSize(v, 1<<20)
		if err != nil {
			return fmt.Errorf("%w: -m %s: a plain size only: %w", ErrRefused, v, err)
		}
		d.MemSize = size
	case "object":
		return m.object(v)
	case "drive":
		return m.drive(v)
	case "kernel", "initrd":
		if err := once(name); err != nil {
			return err
		}
		if !filepath.IsAbs(v) {
			return fmt.Errorf("%w: -%s %s: an absolute file path is required", ErrUnsupported, name, v)
		}
		if name == "kernel" {
			m.Kernel, d.Kernel = v, true
		} else {
			m.Initrd, d.Initrd = v, true
		}
	case "append":
		if err := once(name); err != nil {
			return err
		}
		d.Append = v
	case "device":
		ps, err := parseProps(name, v, "driver")
		d.Devices = append(d.Devices, ps)
		return err
	case "netdev":
		ps, err := parseProps(name, v, "type")
		d.Netdevs = append(d.Netdevs, ps)
		return err
	case "vga":
		if err := once(name); err != nil {
			return err
		}
		d.VGA = v
	case "serial":
		d.Serials++
	case "hda", "hdb", "hdc", "hdd", "cdrom", "blockdev", "pflash", "mtdblock", "sd":
		return fmt.Errorf("%w: -%s: give disks as -drive file=PATH", ErrUnsupported, name)
	case "incoming":
		return fmt.Errorf("%w: the guest is itself waiting for an incoming migration (-incoming)", ErrUnsupported)
	case "mem-path", "mem-prealloc":
		return fmt.Errorf("%w: -%s: use -object memory-backend-file,share=on with -machine memory-backend=", ErrUnsupported, name)
	default:
		if !slices.Contains(localOptions, name) {
			return fmt.Errorf("%w: option -%s is not on the allow-list", ErrRefused, name)
		}
	}
	return nil
}

// object takes one -object: only guest RAM, a shared memory-backend-file.
func (m *Machine) object(v string) error {
	ps, err := parseProps("object", v, "qom-type")
	if err != nil {
		return err
	}
	typ := ps.Get("qom-type")
	if typ != "memory-backend-file" {
		if strings.HasPrefix(typ, "memory-backend") {
			return fmt.Errorf("%w: -object %s: guest RAM must be a memory-backend-file with share=on (x-ignore-shared keeps it out of the device state)", ErrUnsupported, v)
		}
		return fmt.Errorf("%w: -object %s: only memory-backend-file is on the allow-list", ErrRefused, typ)
	}
	var mem MemoryBackend
	var path string
	for _, p := range ps {
		switch p.Key {
		case "qom-type":
		case "id":
			mem.ID = p.Value
		case "size":
			if mem.Size, err = parseSize(p.Value, 1); err != nil {
				return fmt.Errorf("%w: -object %s: size: %w", ErrUnsupported, v, err)
			}
		case "mem-path":
			path = p.Value
		case "share":
			if p.Value != "on" {
				return fmt.Errorf("%w: -object %s: share=on is required (x-ignore-shared skips only shared RAM)", ErrUnsupported, v)
			}
		default:
			mem.Props = append(mem.Props, p)
		}
	}
	if ps.Get("share") != "on" {
		return fmt.Errorf("%w: -object %s: share=on is required (x-ignore-shared skips only shared RAM)", ErrUnsupported, v)
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%w: -object %s: mem-path must be an absolute file path", ErrUnsupported, v)
	}
	if mem.Size == 0 {
		return fmt.Errorf("%w: -object %s: size: missing", ErrUnsupported, v)
	}
	m.Guest.Memory = append(m.Guest.Memory, mem)
	m.Memory = append(m.Memory, Memory{Path: path, Size: mem.Size})
	return nil
}

// drive takes one -drive: an image (file=PATH, format=raw) or an empty
// drive.
func (m *Machine) drive(v string) error {
	ps, err := parseProps("drive", v, "")
	if err != nil {
		return err
	}
	dr := DriveSpec{}
	file := ""
	for _, p := range ps {
		switch p.Key {
		case "file":
			file = p.Value
		case "format":
			// Only raw: a qcow2 header names backing and data files, host
			// paths the destination would open.
			if p.Value != "raw" {
				return fmt.Errorf("%w: -drive %s: format %q: only raw images move (a qcow2 header can name host files)", ErrRefused, v, p.Value)
			}
		default:
			dr.Props = append(dr.Props, p)
		}
	}
	if err := checkProps("drive", dr.Props, driveKeys); err != nil {
		return err
	}
	if file != "" {
		if !filepath.IsAbs(file) || strings.Contains(file, ":") {
			return fmt.Errorf("%w: -drive %s: file must be an absolute path to an image (not a URL or protocol)", ErrUnsupported, v)
		}
		if ps.Get("format") != "raw" {
			return fmt.Errorf("%w: -drive %s: format=raw is required (a probed format could be qcow2, whose header names host files)", ErrRefused, v)
		}
		dr.Image = true
		m.Drives = append(m.Drives, Drive{Path: file})
	} else if ps.Get("format") != "" {
		return fmt.Errorf("%w: -drive %s: format without a file", ErrUnsupported, v)
	}
	m.Guest.Drives = append(m.Guest.Drives, dr)
	return nil
}

// parseProps parses a QEMU option string (comma-separated key=value
// pairs, ",," a literal comma). A bare first item is the value of
// implied; a bare item elsewhere, or a repeated key, is refused.
func parseProps(opt, s, implied string) (Props, error) {
	var out Props
	var cur strings.Builder
	var err error
	flush := func() {
		item := cur.String()
		cur.Reset()
		k, v, ok := strings.Cut(item, "=")
		switch {
		case ok:
		case len(out) == 0 && implied != "":
			k, v = implied, item
		default:
			if err == nil {
				err = fmt.Errorf("%w: -%s %s: item %q has no key", ErrRefused, opt, s, item)
			}
			return
		}
		for _, p := range out {
			if p.Key == k && err == nil {
				err = fmt.Errorf("%w: -%s: key %q given twice", ErrRefused, opt, k)
			}
		}
		out = append(out, Prop{k, v})
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
	return out, err
}

// parseSize reads a QEMU size: a number with k/M/G/T suffix (powers of
// 1024) or B; unit is the multiplier of a bare number (QEMU's -m takes
// MiB).
func parseSize(s string, unit int64) (int64, error) {
	if s == "" {
		return 0, errors.New("missing")
	}
	mult := unit
	num := s[:len(s)-1]
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
	default:
		num = s
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
