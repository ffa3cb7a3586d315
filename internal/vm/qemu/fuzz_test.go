package qemu

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzDestinationArgs: for any bytes in a guest config region (it comes
// from the network), ReadConfig and Args either refuse, or build a
// command line whose every option is one the builder may write, whose
// every sub-key is on the allow-list, whose every host path lies in the
// guest's own directory, and which has -nodefaults (no default NIC).
func FuzzDestinationArgs(f *testing.F) {
	m, err := ParseArgs(guestArgs)
	if err != nil {
		f.Fatal(err)
	}
	seed, _ := jsonConfig(Config{VM: "web1", Guest: m.Guest})
	f.Add(seed)
	f.Add([]byte(`{"vm":"x","guest":{"arch":"x86_64","machine":[{"k":"type","v":"q35"},{"k":"type","v":"pc"}],"memory":[{"id":"m","size":4096}]}}`))
	f.Add([]byte(`{"vm":"x","guest":{"arch":"aarch64","memory":[{"id":"a","size":4096},{"id":"b","size":8192,"props":[{"k":"prealloc","v":"on"}]}],"drives":[{"image":true,"props":[{"k":"if","v":"virtio"}]},{}],"devices":[[{"k":"driver","v":"virtio-net-pci"},{"k":"netdev","v":"n"}]],"netdevs":[[{"k":"type","v":"user"},{"k":"id","v":"n"}]],"kernel":true,"initrd":true,"append":"a,b","serials":2,"flags":["nodefaults"]}}`))
	f.Add([]byte(`{"vm":"x","args":["bash"]}`))
	f.Add([]byte(`not json`))
	const dir = "/g"
	p := Placement{
		Dirs: []string{dir},
		File: func(r string) string { return dir + "/lazy/" + r },
		Disk: func(r string) Disk { // an NBD export, or a file once settled
			if r == DiskRegion(0) {
				return Disk{Path: dir + "/nbd/" + r + ".sock", NBD: true}
			}
			return Disk{Path: dir + "/vms/" + r + ".img"}
		},
		RunDir: dir + "/run",
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ReadConfig(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		out, handed, err := cfg.Guest.Args(p)
		if err != nil {
			return
		}
		checkBuilt(t, out, handed, dir)
	})
}

// valueOptions take a value; every other option Args writes is a flag.
var valueOptions = slices.DeleteFunc(slices.Clone(builtOptions), func(o string) bool { return o == "S" })

// checkBuilt fails t unless every option of out is one Args may write,
// every sub-key is allowed and every host path lies below dir, on the
// command line or handed as a descriptor.
func checkBuilt(t *testing.T, out []string, handed []Handed, dir string) {
	t.Helper()
	in := func(what, path string) {
		if !inside(path, []string{dir}) {
			t.Fatalf("%s path %q outside %s: %q", what, path, dir, out)
		}
	}
	for _, h := range handed {
		in("handed", h.Path)
		if h.Flag != os.O_RDONLY && h.Flag != os.O_RDWR {
			t.Fatalf("handed %v", h)
		}
	}
	sets := map[string]bool{} // -add-fd sets seen
	fds := 0
	nodefaults := 0
	keysOK := func(opt, v string, implied string, keys map[string]rule, extra ...string) Props {
		ps, err := parseProps(opt, v, implied)
		if err != nil {
			t.Fatalf("-%s %q does not parse: %v", opt, v, err)
		}
		for _, p := range ps {
			if _, ok := keys[p.Key]; !ok && !slices.Contains(extra, p.Key) {
				t.Fatalf("-%s carries key %q: %q", opt, p.Key, out)
			}
		}
		return ps
	}
	for i := 0; i < len(out); i++ {
		name, ok := strings.CutPrefix(out[i], "-")
		if !ok {
			t.Fatalf("argument %q where an option was due: %q", out[i], out)
		}
		if !slices.Contains(valueOptions, name) {
			if name != "S" && !slices.Contains(flags, name) {
				t.Fatalf("option -%s is not one the builder may write: %q", name, out)
			}
			if name == "nodefaults" {
				nodefaults++
			}
			continue
		}
		if i+1 >= len(out) {
			t.Fatalf("-%s without a value: %q", name, out)
		}
		i++
		v := out[i]
		switch name {
		case "machine":
			keysOK(name, v, "", machineKeys)
		case "accel":
			keysOK(name, v, "", accelKeys)
		case "smp":
			keysOK(name, v, "", smpKeys)
		case "device":
			keysOK(name, v, "", deviceKeys)
		case "netdev":
			if ps := keysOK(name, v, "", netdevKeys); ps.Get("restrict") != "on" {
				t.Fatalf("-netdev %q not restricted", v)
			}
		case "object":
			ps := keysOK(name, v, "qom-type", memoryKeys, "qom-type", "id", "size", "mem-path", "share")
			if ps.Get("qom-type") != "memory-backend-file" || ps.Get("share") != "on" {
				t.Fatalf("-object %q", v)
			}
			in("memory", ps.Get("mem-path"))
		case "add-fd":
			ps := keysOK(name, v, "", map[string]rule{"fd": count(1 << 20), "set": count(1 << 20)})
			if ps.Get("fd") != strconv.Itoa(firstHandedFD+fds) {
				t.Fatalf("-add-fd %q: descriptor %d expected", v, firstHandedFD+fds)
			}
			fds++
			sets[ps.Get("set")] = true
		case "drive":
			ps := keysOK(name, v, "", driveKeys, "file", "format")
			if f := ps.Get("file"); f != "" {
				if ps.Get("format") != "raw" {
					t.Fatalf("-drive %q", v)
				}
				if set, ok := strings.CutPrefix(f, "/dev/fdset/"); ok {
					if !sets[set] {
						t.Fatalf("-drive %q: no such -add-fd set", v)
					}
					continue
				}
				sock, ok := strings.CutPrefix(f, "nbd+unix:///")
				_, sock, _ = strings.Cut(sock, "?socket=")
				if !ok {
					t.Fatalf("-drive %q", v)
				}
				in("disk", sock)
			}
		case "kernel", "initrd":
			in(name, v)
		case "serial":
			if v != "null" {
				f, ok := strings.CutPrefix(v, "file:")
				if !ok {
					t.Fatalf("-serial %q", v)
				}
				in("serial", f)
			}
		case "qmp":
			s, ok := strings.CutPrefix(v, "unix:")
			s, _, _ = strings.Cut(s, ",")
			if !ok || strings.Count(v, ",") != 2 {
				t.Fatalf("-qmp %q", v)
			}
			in("qmp", s)
		case "pidfile":
			in("pidfile", v)
		case "display", "monitor", "vga", "incoming", "cpu", "m":
			if strings.ContainsAny(v, ",=/") && name != "m" {
				t.Fatalf("-%s %q", name, v)
			}
		case "append":
			// The guest kernel's command line: the guest's, not the host's.
		}
	}
	if nodefaults != 1 {
		t.Fatalf("%d -nodefaults (QEMU would add a default NIC on an unrestricted user network): %q", nodefaults, out)
	}
	if fds != len(handed) {
		t.Fatalf("%d -add-fd for %d handed files: %q", fds, len(handed), out)
	}
}

func jsonConfig(c Config) ([]byte, error) {
	var b bytes.Buffer
	err := jsonEncode(&b, c)
	return b.Bytes(), err
}

func jsonEncode(b *bytes.Buffer, v any) error { return json.NewEncoder(b).Encode(v) }
