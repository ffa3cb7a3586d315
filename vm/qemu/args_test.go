package qemu

import (
	"errors"
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
	"--drive", "file=/vm/data.qcow2,format=qcow2,if=virtio",
	"-serial", "file:/vm/serial.log", "-serial", "unix:/vm/s2.sock,server=on,wait=off",
	"-chardev", "socket,id=ch0,path=/vm/ch0.sock,server=on,wait=off",
	"-qmp", "unix:/vm/qmp.sock,server=on,wait=off", "-pidfile", "/vm/pid", "-daemonize", "-S"}

func TestParseArgsFindsHostPaths(t *testing.T) {
	m, err := ParseArgs(guestArgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Memory) != 1 || m.Memory[0] != (Memory{ID: "mem", Path: "/vm/web,1.mem", Size: 256 << 20, Region: "mem", opt: 4}) {
		t.Fatalf("memory: %+v", m.Memory)
	}
	if len(m.Drives) != 2 || m.Drives[0].Path != "/vm/web1.disk" || m.Drives[0].Region != "disk0" ||
		m.Drives[1].Path != "/vm/data.qcow2" || m.Drives[1].Format != "qcow2" || m.Drives[1].Region != "disk1" {
		t.Fatalf("drives: %+v", m.Drives)
	}
	if m.Kernel != "/boot/vmlinuz" || m.Initrd != "/boot/initrd" {
		t.Fatalf("kernel %q initrd %q", m.Kernel, m.Initrd)
	}
}

func TestDestinationArgsReplaceEveryHostPath(t *testing.T) {
	m, err := ParseArgs(guestArgs)
	if err != nil {
		t.Fatal(err)
	}
	got := m.DestinationArgs(Placement{
		File:   func(r string) string { return "/lazy/" + r },
		Disk:   func(r string) string { return "nbd+unix:///" + r + "?socket=/nbd/" + r + ".sock" },
		RunDir: "/run/g",
	})
	joined := strings.Join(got, " ")
	for _, want := range []string{
		"memory-backend-file,id=mem,size=256M,mem-path=/lazy/mem,share=on",
		"-kernel /lazy/kernel", "-initrd /lazy/initrd",
		"file=nbd+unix:///disk0?socket=/nbd/disk0.sock,format=raw,if=virtio,cache=none",
		"-drive if=none,id=cd",
		"file=nbd+unix:///disk1?socket=/nbd/disk1.sock,format=qcow2",
		"-serial file:/run/g/serial.log", "-serial null",
		"socket,id=ch0,path=/run/g/ch0-path,server=on,wait=off",
		"-display none", "-append console=ttyS0 quiet",
		"-qmp unix:/run/g/qmp.sock,server=on,wait=off", "-S -incoming defer",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("destination args lack %q:\n%s", want, joined)
		}
	}
	for _, gone := range []string{"/vm/", "-daemonize", "-pidfile", "-nographic"} {
		if strings.Contains(joined, gone) {
			t.Errorf("destination args keep %q:\n%s", gone, joined)
		}
	}
	if n := strings.Count(joined, "-qmp"); n != 1 {
		t.Errorf("%d -qmp options", n)
	}
	// The QEMU binary is not part of the arguments.
	if slices.Contains(got, guestArgs[0]) {
		t.Errorf("binary in the arguments: %q", got)
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
		"URL drive":          {append(append(slices.Clone(base), mem...), "-drive", "file=nbd://h/x"), "absolute path"},
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

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "256M": 256 << 20, "1G": 1 << 30, "2k": 2048, "1T": 1 << 40, "512B": 512} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "M", "-1G", "1.5G", "99999999999T"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

func TestKVRoundTrip(t *testing.T) {
	for _, s := range []string{"q35,memory-backend=mem", "file=/a,,b,format=raw", "x", "a=1,b=,c"} {
		if got := parseKV(s).String(); got != s {
			t.Errorf("%q -> %q", s, got)
		}
	}
	if got := parseKV("a=1").with("b", "x,y").String(); got != "a=1,b=x,,y" {
		t.Errorf("with: %q", got)
	}
}
