package fetch

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/sgrelay/sg/internal/wire"
)

// Even a region name that slipped past every check (the Incoming is built
// here by hand, bypassing Open) cannot make a gather create, truncate or
// open a file outside its directory: the files are opened through an
// os.Root of it.
func TestGatherFilesStayInTheirDirectory(t *testing.T) {
	top := t.TempDir()
	dir := filepath.Join(top, "vms", "0123")
	victim := filepath.Join(top, "victim.img")
	want := []byte("the victim's own bytes")
	if err := os.WriteFile(victim, want, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"../../victim", "/../../victim", "../0123/../../victim"} {
		in := &Incoming{VM: "web1", Regions: []wire.RegionInfo{{Name: name, Kind: 1, Size: 8192, ChunkSize: 4096}}}
		if g, err := NewGatherer(in, nil, nil, DefaultGatherConfig(dir)); err == nil {
			g.Close()
			t.Fatalf("region %q: a gather was prepared", name)
		} else {
			t.Logf("region %q: %v", name, err)
		}
		if got, err := os.ReadFile(victim); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("region %q: the victim is now %q (%v)", name, got, err)
		}
	}
	// A symbolic link planted in the directory does not lead out of it either.
	if err := os.Symlink(victim, filepath.Join(dir, "mem.img")); err != nil {
		t.Fatal(err)
	}
	in := &Incoming{VM: "web1", Regions: []wire.RegionInfo{{Name: "mem", Kind: 1, Size: 8192, ChunkSize: 4096}}}
	if g, err := NewGatherer(in, nil, nil, DefaultGatherConfig(dir)); err == nil {
		g.Close()
		t.Fatal("a gather opened its region through a link out of its directory")
	}
	if got, err := os.ReadFile(victim); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("through a link: the victim is now %q (%v)", got, err)
	}
}
