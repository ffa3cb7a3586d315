package qemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

var guestArgs = []string{"/usr/bin/qemu-system-x86_64", "-accel", "tcg", "-nographic",
	"-machine", "q35,memory-backend=mem", "-m", "256M",
	"-object", "memory-backend-file,id=mem,size=256M,mem-path=/vm/web,,1.mem,share=on",
	"-kernel", "/boot/vmlinuz", "-initrd", "/boot/initrd", "-append", "console=ttyS0 quiet",
	"-drive", "file=/vm/web1.disk,format=raw,if=virtio,cache=none",
	"-drive", "if=none,id=cd",
	"--drive", "file=/vm/data.img,format=raw,if=virtio",
	"-device", "virtio-rng-pci,id=rng0", "-netdev", "user,id=n0",
	"-serial", "file:/vm/serial.log", "-serial", "unix:/vm/s2.sock,server=on,wait=off",
	"-qmp", "unix:/vm/qmp.sock,server=on,wait=off", "-pidfile", "/vm/pid", "-daemonize", "-S", "-nodefaults"}

// testPlacement keeps everything below /g.
var testPlacement = Placement{
	Dirs:   []string{"/g"},
	File:   func(r string) string { return "/g/lazy/" + r },
	Disk:   func(r string) Disk { return Disk{Path: "/g/nbd/" + r + ".sock", NBD: true} },
	RunDir: "/g/run",
}

func TestParseArgsDescribesGuest(t *testing.T) {
	m, err := ParseArgs(guestArgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Memory) != 1 || m.Memory[0] != (Memory{Path: "/vm/web,1.mem", Size: 256 << 20, Region: "mem"}) {
		t.Fatalf("memory: %+v", m.Memory)
	}
	if len(m.Drives) != 2 || m.Drives[0] != (Drive{"/vm/web1.disk", "disk0"}) || m.Drives[1] != (Drive{"/vm/data.img", "disk1"}) {
		t.Fatalf("drives: %+v", m.Drives)
	}
	if m.Kernel != "/boot/vmlinuz" || m.Initrd != "/boot/initrd" {
		t.Fatalf("kernel %q initrd %q", m.Kernel, m.Initrd)
	}
	d := m.Guest
	if d.Arch != "x86_64" || d.MemSize != 256<<20 || d.Serials != 2 || !d.Kernel || !d.Initrd ||
		d.Machine.Get("type") != "q35" || d.Accel.Get("accel") != "tcg" || !slices.Equal(d.Flags, []string{"nodefaults"}) ||
		len(d.Drives) != 3 || !d.Drives[0].Image || d.Drives[1].Image || len(d.Devices) != 1 {
		t.Fatalf("description: %+v", d)
	}
	// Nothing of the source's host travels: no path in the description.
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("/vm/")) || bytes.Contains(b, []byte("/boot/")) || bytes.Contains(b, []byte("qemu-system")) {
		t.Fatalf("description carries host paths or the binary: %s", b)
	}
}

func TestArgsPlaceEveryHostPathInTheGuestsDirectories(t *testing.T) {
	m, err := ParseArgs(guestArgs)
	if err != nil {
		t.Fatal(err)
	}
	got, handed, err := m.Guest.Args(testPlacement)
	if err != nil {
		t.Fatal(err)
	}
	if len(handed) != 0 {
		t.Errorf("NBD disks handed as files: %v", handed)
	}
	joined := strings.Join(got, " ")
	for _, want := range []string{
		"-machine type=q35,memory-backend=mem", "-accel accel=tcg", "-m 256M",
		"-object memory-backend-file,id=mem,size=268435456,mem-path=/g/lazy/mem,share=on",
		"-kernel /g/lazy/kernel", "-initrd /g/lazy/initrd",
		"-drive file=nbd+unix:///disk0?socket=/g/nbd/disk0.sock,format=raw,if=virtio,cache=none",
		"-drive if=none,id=cd",
		"-drive file=nbd+unix:///disk1?socket=/g/nbd/disk1.sock,format=raw,if=virtio",
		"-device driver=virtio-rng-pci,id=rng0", "-netdev type=user,id=n0,restrict=on",
		"-serial file:/g/run/serial.log", "-serial null", "-display none", "-append console=ttyS0 quiet",
		"-qmp unix:/g/run/qmp.sock,server=on,wait=off", "-pidfile /g/run/qemu.pid", "-S -incoming defer", "-nodefaults",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("destination args lack %q:\n%s", want, joined)
		}
	}
	for _, gone := range []string{"/vm/", "/boot/", "-daemonize", "-nographic", "qemu-system"} {
		if strings.Contains(joined, gone) {
			t.Errorf("destination args keep %q:\n%s", gone, joined)
		}
	}
	if n := strings.Count(joined, "-qmp"); n != 1 {
		t.Errorf("%d -qmp options", n)
	}
}

// Disk images that are files reach QEMU as descriptors in -add-fd sets:
// read-only and read-write, or read-only only for a read-only drive.
func TestArgsHandFileDisksAsDescriptors(t *testing.T) {
	m, err := ParseArgs(append(slices.Clone(guestArgs), "-drive", "file=/vm/ro.img,format=raw,readonly=on"))
	if err != nil {
		t.Fatal(err)
	}
	p := testPlacement
	p.Disk = func(r string) Disk { return Disk{Path: "/g/vms/" + r + ".img"} }
	got, handed, err := m.Guest.Args(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []Handed{{"/g/vms/disk0.img", os.O_RDONLY}, {"/g/vms/disk0.img", os.O_RDWR},
		{"/g/vms/disk1.img", os.O_RDONLY}, {"/g/vms/disk1.img", os.O_RDWR}, {"/g/vms/disk2.img", os.O_RDONLY}}
	if !slices.Equal(handed, want) {
		t.Fatalf("handed %v, want %v", handed, want)
	}
	joined := strings.Join(got, " ")
	for _, w := range []string{"-add-fd fd=3,set=1 -add-fd fd=4,set=1", "-add-fd fd=7,set=3",
		"-drive file=/dev/fdset/1,format=raw,if=virtio,cache=none", "-drive file=/dev/fdset/3,format=raw,readonly=on"} {
		if !strings.Contains(joined, w) {
			t.Errorf("args lack %q:\n%s", w, joined)
		}
	}
	if strings.Contains(joined, "/g/vms/") {
		t.Errorf("a disk image's path on the command line: %s", joined)
	}
}

func TestArgsRefusesPlacementOutsideTheGuestsDirectories(t *testing.T) {
	m, err := ParseArgs(guestArgs)
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]Placement{
		"file":    {Dirs: []string{"/g"}, File: func(r string) string { return "/g/../etc/" + r }, Disk: testPlacement.Disk, RunDir: "/g/run"},
		"disk":    {Dirs: []string{"/g"}, File: testPlacement.File, Disk: func(string) Disk { return Disk{Path: "/dev/sda"} }, RunDir: "/g/run"},
		"run dir": {Dirs: []string{"/g"}, File: testPlacement.File, Disk: testPlacement.Disk, RunDir: "/tmp"},
		"no dirs": {File: testPlacement.File, Disk: testPlacement.Disk, RunDir: "/g/run"},
	} {
		if _, _, err := m.Guest.Args(p); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "outside the guest's directories") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestParseArgsRefusesWhatCannotMove(t *testing.T) {
	base := []string{"qemu-system-x86_64", "-machine", "q35,memory-backend=mem"}
	mem := []string{"-object", "memory-backend-file,id=mem,size=1G,mem-path=/vm/m,share=on"}
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no memory file":     {base, "no -object memory-backend-file"},
		"anonymous memory":   {append(slices.Clone(base), "-object", "memory-backend-ram,id=mem,size=1G"), "must be a memory-backend-file"},
		"private memory":     {append(slices.Clone(base), "-object", "memory-backend-file,id=mem,size=1G,mem-path=/vm/m"), "share=on"},
		"relative mem-path":  {append(slices.Clone(base), "-object", "memory-backend-file,id=mem,size=1G,mem-path=m,share=on"), "absolute"},
		"bad size":           {append(slices.Clone(base), "-object", "memory-backend-file,id=mem,size=lots,mem-path=/m,share=on"), "size"},
		"hda":                {append(append(slices.Clone(base), mem...), "-hda", "/vm/d"), "-drive file=PATH"},
		"blockdev":           {append(append(slices.Clone(base), mem...), "-blockdev", "driver=file,filename=/d"), "-drive file=PATH"},
		"URL drive":          {append(append(slices.Clone(base), mem...), "-drive", "file=nbd://h/x,format=raw"), "absolute path"},
		"incoming":           {append(append(slices.Clone(base), mem...), "-incoming", "defer"), "incoming"},
		"bare image":         {append(append(slices.Clone(base), mem...), "/vm/disk.img"), "unexpected argument"},
		"option at the end":  {append(append(slices.Clone(base), mem...), "-m"), "no value"},
		"empty command line": {nil, "empty"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseArgs(tc.args)
			if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrUnsupported mentioning %q", err, tc.want)
			}
		})
	}
}

// hostileArgs are command lines that would make the destination run a
// program or touch a host file, each with what the refusal must name.
var hostileArgs = map[string]struct {
	args []string
	want string
}{
	"bash as the binary":    {[]string{"bash", "-c", "touch /tmp/x"}, `program "bash"`},
	"parallel to a file":    {[]string{"-parallel", "file:/tmp/x"}, "-parallel"},
	"nested drive filename": {[]string{"-drive", "file.filename=/etc/shadow,format=raw"}, `"file.filename"`},
	"drive driver":          {[]string{"-drive", "driver=raw,file.filename=/etc/shadow"}, "-drive"},
	"fw_cfg file":           {[]string{"-fw_cfg", "name=x,file=/etc/shadow"}, "-fw_cfg"},
	"loader device":         {[]string{"-device", "loader,file=/etc/shadow"}, "-device loader"},
	"device romfile":        {[]string{"-device", "e1000,romfile=/etc/shadow"}, `"romfile"`},
	"virtfs":                {[]string{"-virtfs", "local,path=/,mount_tag=r,security_model=none"}, "-virtfs"},
	"plugin":                {[]string{"-plugin", "/tmp/evil.so"}, "-plugin"},
	"hostfwd":               {[]string{"-netdev", "user,id=n,hostfwd=tcp::22-:22"}, `"hostfwd"`},
	"unrestricted netdev":   {[]string{"-netdev", "user,id=n,restrict=off"}, `restrict: "off"`},
	"tap script":            {[]string{"-netdev", "tap,id=n,script=/tmp/x"}, "-netdev"},
	"duplicate mem-path":    {[]string{"-object", "memory-backend-file,id=m2,size=1M,mem-path=/vm/a,share=on,mem-path=/etc/passwd"}, `"mem-path" given twice`},
	"machine dumpdtb":       {[]string{"-machine", "q35,dumpdtb=/tmp/x"}, `"dumpdtb"`},
	"qcow2 image":           {[]string{"-drive", "file=/vm/d.qcow2,format=qcow2"}, "qcow2"},
	"probed format":         {[]string{"-drive", "file=/vm/d.img"}, "format=raw is required"},
	"chardev":               {[]string{"-chardev", "file,id=c,path=/tmp/x"}, "-chardev"},
	"gdb stub":              {[]string{"-gdb", "tcp::1234"}, "-gdb"},
	"cpu properties":        {[]string{"-cpu", "max,x-foo=on"}, "-cpu"},
}

// HostileCommandLine is a guest's argv with one hostile piece.
func hostileCommandLine(extra []string) []string {
	if extra[0] == "bash" {
		return extra
	}
	return append([]string{"qemu-system-x86_64", "-m", "1G",
		"-object", "memory-backend-file,id=mem,size=1G,mem-path=/vm/m,share=on"}, extra...)
}

func TestParseArgsRefusesWhatIsNotOnTheAllowList(t *testing.T) {
	for name, tc := range hostileArgs {
		t.Run(name, func(t *testing.T) {
			_, err := ParseArgs(hostileCommandLine(tc.args))
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrRefused naming %q", err, tc.want)
			}
		})
	}
}

// A modified source sends a description the parser would never make: the
// destination's check (in ReadConfig and again in Args) refuses it.
func TestHostileDescriptionsAreRefused(t *testing.T) {
	good := func() Description {
		m, err := ParseArgs(guestArgs)
		if err != nil {
			t.Fatal(err)
		}
		return m.Guest
	}
	for name, tc := range map[string]struct {
		edit func(*Description)
		want string
	}{
		"arch with a path":     {func(d *Description) { d.Arch = "../../bin/bash" }, "architecture"},
		"machine kernel":       {func(d *Description) { d.Machine = append(d.Machine, Prop{"kernel", "/etc/shadow"}) }, `"kernel"`},
		"duplicate machine":    {func(d *Description) { d.Machine = append(d.Machine, Prop{"type", "pc"}) }, `"type" given twice`},
		"drive file":           {func(d *Description) { d.Drives[1].Props = append(d.Drives[1].Props, Prop{"file", "/etc/shadow"}) }, `"file"`},
		"drive nested file":    {func(d *Description) { d.Drives[0].Props = append(d.Drives[0].Props, Prop{"file.filename", "/x"}) }, `"file.filename"`},
		"loader device":        {func(d *Description) { d.Devices = append(d.Devices, Props{{"driver", "loader"}, {"file", "/x"}}) }, "loader"},
		"device without type":  {func(d *Description) { d.Devices = append(d.Devices, Props{{"file", "/x"}}) }, "without a driver"},
		"netdev helper":        {func(d *Description) { d.Netdevs = append(d.Netdevs, Props{{"type", "bridge"}, {"helper", "/x"}}) }, "bridge"},
		"memory with a path":   {func(d *Description) { d.Memory[0].Props = Props{{"mem-path", "/etc/passwd"}} }, `"mem-path"`},
		"flag":                 {func(d *Description) { d.Flags = append(d.Flags, "daemonize") }, "-daemonize"},
		"cpu with properties":  {func(d *Description) { d.CPU = "max,x=1" }, "-cpu"},
		"append on two lines":  {func(d *Description) { d.Append = "a\nb" }, "-append"},
		"too many serials":     {func(d *Description) { d.Serials = 1 << 20 }, "serial"},
		"value with a comma":   {func(d *Description) { d.Drives[0].Props = Props{{"id", "x,file=/etc/shadow"}} }, "plain name"},
		"huge memory":          {func(d *Description) { d.Memory[0].Size = 1 << 60 }, "size"},
		"unknown backend":      {func(d *Description) { d.Machine = Props{{"memory-backend", "other"}} }, "memory-backend"},
		"vga with an argument": {func(d *Description) { d.VGA = "qxl" }, "-vga"},
	} {
		t.Run(name, func(t *testing.T) {
			d := good()
			tc.edit(&d)
			_, _, err := d.Args(testPlacement)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Args: got %v, want ErrRefused naming %q", err, tc.want)
			}
			b, _ := json.Marshal(Config{VM: "web1", Guest: d})
			if _, err := ReadConfig(bytes.NewReader(b), int64(len(b))); !errors.Is(err, ErrRefused) {
				t.Fatalf("ReadConfig: %v", err)
			}
		})
	}
}

func TestReadConfigRefusesACommandLine(t *testing.T) {
	b := []byte(`{"vm":"web1","args":["bash","-c","touch /tmp/x"]}`)
	if _, err := ReadConfig(bytes.NewReader(b), int64(len(b))); err == nil || !strings.Contains(err.Error(), `unknown field "args"`) {
		t.Fatalf("got %v", err)
	}
	b = []byte(`{"vm":"../x","guest":{}}`)
	if _, err := ReadConfig(bytes.NewReader(b), int64(len(b))); err == nil {
		t.Fatal("a VM name with a path accepted")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "256M": 256 << 20, "1G": 1 << 30, "2k": 2048, "1T": 1 << 40, "512B": 512} {
		if got, err := parseSize(in, 1); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if got, err := parseSize("256", 1<<20); err != nil || got != 256<<20 {
		t.Errorf("-m 256 = %d, %v", got, err)
	}
	for _, bad := range []string{"", "M", "-1G", "1.5G", "99999999999T"} {
		if _, err := parseSize(bad, 1); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

func TestParsePropsRoundTrip(t *testing.T) {
	ps, err := parseProps("drive", "file=/a,,b,format=raw", "")
	if err != nil || !slices.Equal(ps, Props{{"file", "/a,b"}, {"format", "raw"}}) {
		t.Fatalf("%v %v", ps, err)
	}
	if got := propsString(ps); got != "file=/a,,b,format=raw" {
		t.Errorf("%q", got)
	}
	if _, err := parseProps("drive", "a=1,x", ""); err == nil {
		t.Error("bare item accepted")
	}
}

// A source's description without netdevs and without -nodefaults must
// not give the guest QEMU's default NIC (user networking, unrestricted,
// with the destination's loopback at 10.0.2.2): -nodefaults is always
// there, once, and nothing else makes a network.
func TestArgsNeverLeaveADefaultNetwork(t *testing.T) {
	// A source guest without -nodefaults is refused at vm add: its default
	// devices would not exist at the destination.
	noDefaults := []string{"qemu-system-x86_64", "-accel", "tcg", "-machine", "q35,memory-backend=mem", "-m", "64M",
		"-object", "memory-backend-file,id=mem,size=64M,mem-path=/vm/mem,share=on"}
	if _, err := ParseArgs(noDefaults); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "-nodefaults") {
		t.Fatalf("a guest without -nodefaults: %v, want ErrUnsupported naming -nodefaults", err)
	}
	for _, src := range [][]string{
		{"-nodefaults"},
		{"-nodefaults", "-serial", "file:/vm/s.log"},
	} {
		src = append([]string{"qemu-system-x86_64", "-accel", "tcg", "-machine", "q35,memory-backend=mem", "-m", "64M",
			"-object", "memory-backend-file,id=mem,size=64M,mem-path=/vm/mem,share=on"}, src...)
		m, err := ParseArgs(src)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Guest.Netdevs) != 0 {
			t.Fatalf("%q: netdevs %v", src, m.Guest.Netdevs)
		}
		got, handed, err := m.Guest.Args(testPlacement)
		if err != nil {
			t.Fatal(err)
		}
		if n := slices.Index(got, "-nodefaults"); n < 0 || slices.Contains(got[n+1:], "-nodefaults") {
			t.Fatalf("%q: -nodefaults not there exactly once: %q", src, got)
		}
		for _, net := range []string{"-net", "-nic", "-netdev"} {
			if slices.Contains(got, net) {
				t.Fatalf("%q: %s in %q", src, net, got)
			}
		}
		checkBuilt(t, got, handed, "/g")
	}
}
