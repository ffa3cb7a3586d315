package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"

	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/node"
)

// admission is what migrations opened here may claim: the caps of the
// node's config, and the free disk of dir, where their VMs are written.
func admission(c node.Config, dir string) fetch.Admission {
	a := fetch.Admission{
		MaxPositions:   c.MaxIncomingPositions,
		PerSource:      c.MaxIncomingPerPeer,
		PerSourceBytes: c.MaxIncomingBytesPerPeer,
		// What a destination's gathers hold in memory is bounded by the
		// host's memory, however many sources open migrations here.
		MaxOpenPositions: c.MaxOpenPositions,
	}
	if a.MaxOpenPositions == 0 {
		a.MaxOpenPositions = defaultOpenPositions()
	}
	if dir != "" {
		a.Room = func() (int64, error) { return freeDisk(dir) }
	}
	return a
}

// freeDisk is the bytes an unprivileged writer may still put on the file
// system of dir (or of its nearest existing parent, before dir is made).
func freeDisk(dir string) (int64, error) {
	for {
		var st syscall.Statfs_t
		err := syscall.Statfs(dir, &st)
		if err == nil {
			return int64(min(st.Bavail*uint64(st.Bsize), 1<<62)), nil
		}
		parent := filepath.Dir(dir)
		if !errors.Is(err, os.ErrNotExist) || parent == dir {
			return 0, err
		}
		dir = parent
	}
}

// defaultOpenPositions lets the gathers of the migrations open here hold
// at most a quarter of the host's memory (fetch.StatePerPosition bytes a
// position): a 24 GiB host takes 12 M positions, 48 GiB of 4 KiB pages.
func defaultOpenPositions() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil || si.Totalram == 0 {
		return fetch.DefaultMaxPositions
	}
	total := uint64(si.Totalram) * uint64(si.Unit)
	return max(int64(total/4/fetch.StatePerPosition), 1<<20)
}
