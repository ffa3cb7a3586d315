package qemu

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzGuestConfig: any bytes in a guest config region (it comes from the
// network, verified only against the manifest) give a config or an
// error, and any command line in it is parsed and rewritten without a
// panic, keeping no source path for the memory backend.
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
			Disk:   func(r string) string { return "nbd+unix:///" + r },
			RunDir: "/run/g",
		})
		for _, mem := range m.Memory {
			for i, a := range out {
				if strings.HasPrefix(a, "memory-backend") && strings.Contains(a, "mem-path="+mem.Path+",") && i > 0 && out[i-1] == "-object" && mem.Path != "/lazy/"+mem.Region {
					t.Fatalf("memory path %q kept in %q", mem.Path, a)
				}
			}
		}
	})
}
