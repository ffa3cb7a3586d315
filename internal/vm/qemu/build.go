package qemu

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Placement says where the destination keeps a guest's regions and its
// own files. Every path it gives must lie inside one of Dirs (the guest's
// own directories, made by the destination); Args refuses any other.
type Placement struct {
	Dirs   []string                   // the guest's own directories
	File   func(region string) string // a region as a file (FUSE view or local copy)
	Disk   func(region string) Disk   // a disk region
	RunDir string                     // QMP socket, serial log, pid file (one of Dirs or inside one)
}

// Disk is where a disk region is: a file, or the unix socket of an NBD
// export named after the region.
type Disk struct {
	Path string
	NBD  bool
}

// Handed is a file sgnode opens and hands to QEMU as a descriptor (fd
// firstHandedFD+i for the i-th): QEMU, by then unprivileged, reopens a
// disk image when it activates it after an incoming migration, and finds
// it in its -add-fd set instead of the file system.
type Handed struct {
	Path string
	Flag int // os.O_RDONLY or os.O_RDWR
}

// firstHandedFD is the descriptor of the first handed file (after stdin,
// stdout and stderr).
const firstHandedFD = 3

// QMPSocket, SerialLog and PIDFile are where a resumed guest's monitor,
// first serial port and process ID live in its run directory.
func QMPSocket(runDir string) string { return filepath.Join(runDir, "qmp.sock") }
func SerialLog(runDir string) string { return filepath.Join(runDir, "serial.log") }
func PIDFile(runDir string) string   { return filepath.Join(runDir, "qemu.pid") }

// builtOptions are the only options Args writes (besides the flags).
var builtOptions = []string{"machine", "accel", "cpu", "smp", "m", "object", "kernel", "initrd", "append",
	"add-fd", "drive", "device", "netdev", "vga", "display", "serial", "qmp", "monitor", "pidfile", "S", "incoming"}

// inside reports whether path is a clean absolute path below one of dirs.
func inside(path string, dirs []string) bool {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return false
	}
	for _, d := range dirs {
		if d != "" && filepath.IsAbs(d) && strings.HasPrefix(path, filepath.Clean(d)+"/") {
			return true
		}
	}
	return false
}

// Args checks d (Check) and builds the destination's QEMU arguments
// (without the binary, the user and the sandbox, which are local
// settings): the described hardware, every host path one of p's inside
// p.Dirs, no default device (-nodefaults), the monitor on the run
// directory's QMP socket, the first serial port logged there, stopped
// (-S) and waiting for its device state (-incoming defer). Disk images
// that are files are handed over as descriptors: handed lists them, in
// descriptor order.
func (d *Description) Args(p Placement) (args []string, handed []Handed, err error) {
	if err := d.Check(); err != nil {
		return nil, nil, err
	}
	var bad error
	path := func(what, s string) string {
		if !inside(s, p.Dirs) && bad == nil {
			bad = fmt.Errorf("%w: %s path %q is outside the guest's directories", ErrRefused, what, s)
		}
		return s
	}
	out := []string{}
	add := func(opt string, v ...string) { out = append(append(out, "-"+opt), v...) }
	// Always: without it QEMU adds a default NIC on an unrestricted user
	// network (the host's loopback at 10.0.2.2), a default monitor,
	// parallel port and CD-ROM to a description that does not ask for
	// them. Only what the description lists is built.
	add("nodefaults")
	if len(d.Machine) > 0 {
		add("machine", propsString(d.Machine))
	}
	if len(d.Accel) > 0 {
		add("accel", propsString(d.Accel))
	}
	if d.CPU != "" {
		add("cpu", d.CPU)
	}
	if len(d.SMP) > 0 {
		add("smp", propsString(d.SMP))
	}
	if d.MemSize > 0 {
		add("m", fmt.Sprintf("%dM", d.MemSize>>20))
	}
	for i, m := range d.Memory {
		ps := Props{{"id", m.ID}, {"size", fmt.Sprint(m.Size)},
			{"mem-path", path("memory", p.File(MemoryRegion(i, len(d.Memory))))}, {"share", "on"}}
		add("object", "memory-backend-file,"+propsString(append(ps, m.Props...)))
	}
	if d.Kernel {
		add("kernel", path("kernel", p.File(KernelRegion)))
	}
	if d.Initrd {
		add("initrd", path("initrd", p.File(InitrdRegion)))
	}
	if d.Append != "" {
		add("append", d.Append)
	}
	disk := 0
	for _, dr := range d.Drives {
		ps := Props{}
		if dr.Image {
			region := DiskRegion(disk)
			disk++
			at := p.Disk(region)
			file := path("disk", at.Path)
			if at.NBD {
				file = "nbd+unix:///" + region + "?socket=" + file
			} else {
				// One set per image, a read-only and (unless the drive
				// is) a read-write descriptor: QEMU picks by access mode.
				set := disk
				flags := []int{os.O_RDONLY, os.O_RDWR}
				if dr.Props.Get("readonly") == "on" {
					flags = flags[:1]
				}
				for _, f := range flags {
					add("add-fd", fmt.Sprintf("fd=%d,set=%d", firstHandedFD+len(handed), set))
					handed = append(handed, Handed{Path: file, Flag: f})
				}
				file = fmt.Sprintf("/dev/fdset/%d", set)
			}
			ps = Props{{"file", file}, {"format", "raw"}}
		}
		add("drive", propsString(append(ps, dr.Props...)))
	}
	for _, dev := range d.Devices {
		add("device", propsString(dev))
	}
	for _, nd := range d.Netdevs {
		if nd.Get("restrict") == "" {
			nd = append(slices.Clone(nd), Prop{"restrict", "on"})
		}
		add("netdev", propsString(nd))
	}
	if d.VGA != "" {
		add("vga", d.VGA)
	}
	for _, f := range d.Flags {
		if f != "nodefaults" { // already there
			add(f)
		}
	}
	run := path("run directory", filepath.Join(p.RunDir, "x"))
	run = filepath.Dir(run)
	add("display", "none")
	for i := range d.Serials {
		if i == 0 {
			add("serial", "file:"+SerialLog(run))
		} else {
			add("serial", "null")
		}
	}
	add("qmp", "unix:"+QMPSocket(run)+",server=on,wait=off")
	add("monitor", "none")
	add("pidfile", PIDFile(run))
	add("S")
	add("incoming", "defer")
	if bad != nil {
		return nil, nil, bad
	}
	return out, handed, nil
}

// propsString is a QEMU option string: key=value pairs, a "," inside a
// value doubled.
func propsString(ps Props) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.Key + "=" + strings.ReplaceAll(p.Value, ",", ",,")
	}
	return strings.Join(parts, ",")
}
