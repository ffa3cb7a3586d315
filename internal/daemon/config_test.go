package daemon

import (
	"path/filepath"
	"testing"

	"github.com/sgrelay/sg/internal/chunkstore"
)

// `sgnode run --disk-budget 200GiB` names no segment directory: the disk
// tier goes to <data>/chunks (it used to fail validation before that
// default was applied).
func TestDiskBudgetDefaultsItsDirectory(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, Store: chunkstore.Config{DiskBudget: 1 << 30}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := cfg.storeConfig().DiskDir; got != filepath.Join(dir, "chunks") {
		t.Fatalf("disk tier in %q", got)
	}
	cfg.Store.DiskBudget = -1
	if err := cfg.Validate(); err == nil {
		t.Fatal("a negative disk budget passed validation")
	}
}
