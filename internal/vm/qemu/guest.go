package qemu

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ErrRefused is a guest description that names something outside the
// allow-list: an option, a key, a value, a host path or a program.
var ErrRefused = errors.New("refused QEMU configuration")

// Description is a guest's virtual hardware as the source sends it to the
// destination. It holds no host path and no command line: memory, disks,
// kernel and initrd are regions of the eviction (named by their position
// here, never by the sender), and every other field is checked against an
// allow-list (Check) before the destination builds a command line from
// it (Args). Key/value lists are ordered lists, not maps, so that a
// duplicated key arrives as such and is refused instead of silently
// collapsed by the JSON decoder.
type Description struct {
	Arch    string          `json:"arch"`               // the qemu-system-<arch> to run
	Machine Props           `json:"machine,omitempty"`  // -machine: type, memory-backend, ...
	Accel   Props           `json:"accel,omitempty"`    // -accel: accel (tcg, kvm), thread
	CPU     string          `json:"cpu,omitempty"`      // -cpu model
	SMP     Props           `json:"smp,omitempty"`      // -smp
	MemSize int64           `json:"mem_size,omitempty"` // -m, bytes (whole MiB)
	Memory  []MemoryBackend `json:"memory"`             // -object memory-backend-file, regions mem or mem<i>
	Drives  []DriveSpec     `json:"drives,omitempty"`   // -drive; images are regions disk<i>
	Devices []Props         `json:"devices,omitempty"`  // -device: driver first
	Netdevs []Props         `json:"netdevs,omitempty"`  // -netdev: type first
	Kernel  bool            `json:"kernel,omitempty"`   // -kernel from region kernel
	Initrd  bool            `json:"initrd,omitempty"`   // -initrd from region initrd
	Append  string          `json:"append,omitempty"`   // -append: the guest kernel's command line
	Serials int             `json:"serials,omitempty"`  // serial ports: the first logs to the run directory, the others to null
	VGA     string          `json:"vga,omitempty"`      // -vga
	Flags   []string        `json:"flags,omitempty"`    // option flags: nodefaults, no-reboot, ...
}

// MemoryBackend is one shared memory-backend-file of guest RAM.
type MemoryBackend struct {
	ID    string `json:"id"`
	Size  int64  `json:"size"`
	Props Props  `json:"props,omitempty"` // prealloc, merge, dump
}

// DriveSpec is one -drive. An Image drive's file is the disk region
// disk<i> (i counts image drives); others are empty (a CD-ROM tray).
type DriveSpec struct {
	Image bool  `json:"image,omitempty"`
	Props Props `json:"props,omitempty"` // if, cache, id, media, readonly, index, discard
}

// Prop is one key=value of a QEMU option.
type Prop struct {
	Key   string `json:"k"`
	Value string `json:"v"`
}

// Props is an ordered key=value list.
type Props []Prop

// Get is the value of key k ("" if absent).
func (ps Props) Get(k string) string {
	for _, p := range ps {
		if p.Key == k {
			return p.Value
		}
	}
	return ""
}

// Bounds on a description: a destination builds no more than these.
const (
	maxMemoryBackends = 8
	maxDrives         = 16
	maxDevices        = 64
	maxNetdevs        = 8
	maxSerials        = 4
	maxAppend         = 4096
	maxMemSize        = 1 << 42 // 4 TiB of guest RAM
)

// Arches are the qemu-system-<arch> binaries a guest may ask for.
var arches = []string{"x86_64", "i386", "aarch64", "arm", "riscv64", "ppc64", "s390x"}

// rule checks one value.
type rule func(v string) error

var (
	tokenRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	addrRE  = regexp.MustCompile(`^[0-9a-fA-F]{1,2}(\.[0-7])?$`)
	macRE   = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)
)

func token(v string) error {
	if !tokenRE.MatchString(v) {
		return fmt.Errorf("%q is not a plain name", v)
	}
	return nil
}

func match(re *regexp.Regexp) rule {
	return func(v string) error {
		if !re.MatchString(v) {
			return fmt.Errorf("%q is not allowed", v)
		}
		return nil
	}
}

func oneOf(vs ...string) rule {
	return func(v string) error {
		if !slices.Contains(vs, v) {
			return fmt.Errorf("%q is not one of %s", v, strings.Join(vs, ", "))
		}
		return nil
	}
}

func count(limit int) rule {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > limit || strconv.Itoa(n) != v {
			return fmt.Errorf("%q is not a number from 0 to %d", v, limit)
		}
		return nil
	}
}

var onOff = oneOf("on", "off")

// The allow-list: for each option with sub-keys, the keys it may carry
// and what their values may be. Everything else is refused.
var (
	machineKeys = map[string]rule{
		"type": token, "memory-backend": token, "accel": oneOf("tcg", "kvm"),
		"usb": onOff, "vmport": oneOf("on", "off", "auto"), "smm": oneOf("on", "off", "auto"),
		"hpet": onOff, "acpi": oneOf("on", "off", "auto"), "gic-version": oneOf("2", "3", "max"),
	}
	accelKeys  = map[string]rule{"accel": oneOf("tcg", "kvm"), "thread": oneOf("single", "multi")}
	smpKeys    = map[string]rule{"cpus": count(1024), "sockets": count(1024), "dies": count(1024), "cores": count(1024), "threads": count(1024), "maxcpus": count(1024)}
	memoryKeys = map[string]rule{"prealloc": onOff, "merge": onOff, "dump": onOff}
	driveKeys  = map[string]rule{
		"if": oneOf("virtio", "ide", "scsi", "none"), "cache": oneOf("none", "writeback", "writethrough", "directsync", "unsafe"),
		"id": token, "media": oneOf("disk", "cdrom"), "readonly": onOff, "index": count(64), "discard": oneOf("ignore", "unmap", "on", "off"),
	}
	deviceDrivers = []string{
		"virtio-blk-pci", "virtio-blk-device", "virtio-net-pci", "virtio-net-device", "virtio-rng-pci", "virtio-rng-device",
		"virtio-balloon-pci", "virtio-scsi-pci", "scsi-hd", "scsi-cd", "ide-hd", "ide-cd", "e1000", "e1000e",
		"pci-bridge", "pcie-root-port", "isa-serial", "pci-serial",
	}
	deviceKeys = map[string]rule{
		"driver": oneOf(deviceDrivers...), "id": token, "drive": token, "netdev": token, "bus": token,
		"addr": match(addrRE), "mac": match(macRE), "bootindex": count(64), "serial": token,
		"chassis": count(255), "slot": count(255), "port": count(255),
	}
	// A user netdev is always restricted (Args adds restrict=on): an
	// unrestricted one would let the guest reach the destination's own
	// network and its loopback services.
	netdevKeys = map[string]rule{"type": oneOf("user"), "id": token, "restrict": oneOf("on"), "ipv4": onOff, "ipv6": onOff}
	vgaTypes   = []string{"none", "std", "virtio", "cirrus"}
	flags      = []string{"nodefaults", "no-user-config", "no-reboot", "no-shutdown", "no-hpet", "no-acpi", "only-migratable"}
)

// hostKeys are keys known to name a host path, a program or a helper,
// refused with that reason (any other unknown key is refused as such).
var hostKeys = []string{
	"file", "filename", "path", "mem-path", "script", "downscript", "helper", "hostfwd", "guestfwd", "smb", "tftp",
	"bootfile", "romfile", "logfile", "dtb", "dumpdtb", "kernel", "initrd", "firmware", "bios", "fd", "fds", "vhostfd",
	"vhostfds", "sock", "socket", "ifname", "chardev", "rng", "data-file", "backing", "x-data-file", "config-file",
}

// checkProps checks a key/value list of option opt against keys: every
// key allowed, none twice, every value allowed.
func checkProps(opt string, ps Props, keys map[string]rule) error {
	seen := map[string]bool{}
	for _, p := range ps {
		if seen[p.Key] {
			return fmt.Errorf("%w: -%s: key %q given twice", ErrRefused, opt, p.Key)
		}
		seen[p.Key] = true
		r, ok := keys[p.Key]
		if !ok {
			return fmt.Errorf("%w: -%s: %s", ErrRefused, opt, keyReason(p.Key))
		}
		if err := r(p.Value); err != nil {
			return fmt.Errorf("%w: -%s: %s: %w", ErrRefused, opt, p.Key, err)
		}
	}
	return nil
}

func keyReason(k string) string {
	base, _, nested := strings.Cut(k, ".")
	switch {
	case nested:
		return fmt.Sprintf("key %q is not allowed (nested keys reach the block layer's host files)", k)
	case slices.Contains(hostKeys, base):
		return fmt.Sprintf("key %q is not allowed (it names a host path, a program or a helper)", k)
	}
	return fmt.Sprintf("key %q is not on the allow-list", k)
}

// Check refuses a description that names anything outside the
// allow-list, with a message naming it. It is the one check of both
// ends: the source's `vm add` and the destination's command-line builder.
func (d *Description) Check() error {
	if !slices.Contains(arches, d.Arch) {
		return fmt.Errorf("%w: architecture %q is not one of %s", ErrRefused, d.Arch, strings.Join(arches, ", "))
	}
	if err := checkProps("machine", d.Machine, machineKeys); err != nil {
		return err
	}
	if err := checkProps("accel", d.Accel, accelKeys); err != nil {
		return err
	}
	if d.CPU != "" {
		if err := token(d.CPU); err != nil {
			return fmt.Errorf("%w: -cpu: %w", ErrRefused, err)
		}
	}
	if err := checkProps("smp", d.SMP, smpKeys); err != nil {
		return err
	}
	if d.MemSize < 0 || d.MemSize > maxMemSize || d.MemSize%(1<<20) != 0 {
		return fmt.Errorf("%w: -m: %d bytes is not a whole number of MiB up to %d", ErrRefused, d.MemSize, int64(maxMemSize))
	}
	if len(d.Memory) == 0 {
		return fmt.Errorf("%w: no memory-backend-file: guest RAM must be a shared memory-backend-file", ErrUnsupported)
	}
	if len(d.Memory) > maxMemoryBackends {
		return fmt.Errorf("%w: %d memory backends (at most %d)", ErrRefused, len(d.Memory), maxMemoryBackends)
	}
	ids := map[string]bool{}
	for _, m := range d.Memory {
		if err := token(m.ID); err != nil {
			return fmt.Errorf("%w: -object memory-backend-file: id: %w", ErrRefused, err)
		}
		if ids[m.ID] {
			return fmt.Errorf("%w: -object memory-backend-file: id %q given twice", ErrRefused, m.ID)
		}
		ids[m.ID] = true
		if m.Size <= 0 || m.Size > maxMemSize || m.Size%4096 != 0 {
			return fmt.Errorf("%w: -object memory-backend-file: size %d is not a whole number of pages up to %d", ErrRefused, m.Size, int64(maxMemSize))
		}
		if err := checkProps("object memory-backend-file", m.Props, memoryKeys); err != nil {
			return err
		}
	}
	if mb := d.Machine.Get("memory-backend"); mb != "" && !ids[mb] {
		return fmt.Errorf("%w: -machine: memory-backend %q is no memory-backend-file", ErrRefused, mb)
	}
	if len(d.Drives) > maxDrives {
		return fmt.Errorf("%w: %d drives (at most %d)", ErrRefused, len(d.Drives), maxDrives)
	}
	for _, dr := range d.Drives {
		if !dr.Image && len(dr.Props) == 0 {
			return fmt.Errorf("%w: -drive with neither an image nor keys", ErrRefused)
		}
		if err := checkProps("drive", dr.Props, driveKeys); err != nil {
			return err
		}
	}
	if len(d.Devices) > maxDevices {
		return fmt.Errorf("%w: %d devices (at most %d)", ErrRefused, len(d.Devices), maxDevices)
	}
	for _, dev := range d.Devices {
		if len(dev) == 0 || dev[0].Key != "driver" {
			return fmt.Errorf("%w: -device without a driver", ErrRefused)
		}
		if err := checkProps("device "+dev[0].Value, dev, deviceKeys); err != nil {
			return err
		}
	}
	if len(d.Netdevs) > maxNetdevs {
		return fmt.Errorf("%w: %d netdevs (at most %d)", ErrRefused, len(d.Netdevs), maxNetdevs)
	}
	for _, nd := range d.Netdevs {
		if len(nd) == 0 || nd[0].Key != "type" {
			return fmt.Errorf("%w: -netdev without a type", ErrRefused)
		}
		if err := checkProps("netdev "+nd[0].Value, nd, netdevKeys); err != nil {
			return err
		}
	}
	if len(d.Append) > maxAppend || strings.ContainsAny(d.Append, "\x00\n") {
		return fmt.Errorf("%w: -append: at most %d bytes on one line", ErrRefused, maxAppend)
	}
	if d.Serials < 0 || d.Serials > maxSerials {
		return fmt.Errorf("%w: %d serial ports (at most %d)", ErrRefused, d.Serials, maxSerials)
	}
	if d.VGA != "" && !slices.Contains(vgaTypes, d.VGA) {
		return fmt.Errorf("%w: -vga %q is not one of %s", ErrRefused, d.VGA, strings.Join(vgaTypes, ", "))
	}
	for i, f := range d.Flags {
		if !slices.Contains(flags, f) {
			return fmt.Errorf("%w: option -%s is not on the allow-list", ErrRefused, f)
		}
		if slices.Contains(d.Flags[:i], f) {
			return fmt.Errorf("%w: option -%s given twice", ErrRefused, f)
		}
	}
	return nil
}

// MemoryRegion is the region of the i-th of n memory backends.
func MemoryRegion(i, n int) string {
	if n == 1 {
		return "mem"
	}
	return fmt.Sprintf("mem%d", i)
}

// DiskRegion is the region of the i-th image drive.
func DiskRegion(i int) string { return fmt.Sprintf("disk%d", i) }
