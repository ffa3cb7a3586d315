package qemu

import (
	"bytes"
	"testing"
)

// FuzzGuestConfig: any bytes in a guest config region (it comes from the
// network, verified only against the manifest) give a config or an
// error, and any command line in it that parses is rewritten into one
// that parses again and names only the destination's memory, disk,
// kernel and initrd paths.
func FuzzGuestConfig(f *testing.F) {
	f.Add([]byte(`{"vm":"web1","args":["qemu-system-x86_64","-m","1G","-object","memory-backend-file,id=mem,size=1G,mem-path=/vm/m,share=on","-drive","file=/vm/d,format=raw","-kernel","/k","-initrd","/i","-serial","file:/s","-chardev","socket,id=c,path=/p","-nographic"],"paused_at":"2026-11-22T08:00:00Z"}`))
	f.Add([]byte(`{"vm":"x","args":["q","-object","memory-backend-file,,id=a,size=1,mem-path=/,,m,share=on","--drive","file=/a,,b"]}`))
	f.Add([]byte(`{"args":[]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ReadConfig(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		m, err := ParseArgs(cfg.Args)
		if err != nil {
			return
		}
		out := m.DestinationArgs(Placement{
			File:   func(r string) string { return "/lazy/" + r },
			Disk:   func(r string) string { return "/nbd/" + r },
			RunDir: "/run/g",
		})
		// The rewritten line parses again (without its -incoming) and names
		// only the destination's paths.
		if n := len(out); n < 2 || out[n-2] != "-incoming" {
			t.Fatalf("no -incoming at the end: %q", out)
		}
		again, err := ParseArgs(append([]string{"qemu"}, out[:len(out)-2]...))
		if err != nil {
			t.Fatalf("rewritten command line does not parse: %v\n%q", err, out)
		}
		if len(again.Memory) != len(m.Memory) || len(again.Drives) != len(m.Drives) {
			t.Fatalf("rewritten line has %d memories, %d drives; had %d, %d", len(again.Memory), len(again.Drives), len(m.Memory), len(m.Drives))
		}
		for _, mem := range again.Memory {
			if mem.Path != "/lazy/"+mem.Region {
				t.Fatalf("memory %s at %q", mem.Region, mem.Path)
			}
		}
		for _, d := range again.Drives {
			if d.Path != "/nbd/"+d.Region {
				t.Fatalf("drive %s at %q", d.Region, d.Path)
			}
		}
		if m.Kernel != "" && again.Kernel != "/lazy/kernel" || m.Initrd != "" && again.Initrd != "/lazy/initrd" {
			t.Fatalf("kernel %q initrd %q", again.Kernel, again.Initrd)
		}
	})
}
