package daemon

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/node"
)

// Config is everything sgnode runs with. cmd/sgnode fills it from flags and
// the config file; the daemon itself reads no flags or environment.
type Config struct {
	DataDir     string // identity, chunk segments, default socket
	APISocket   string // control socket; default DataDir/sgnode.sock
	MetricsAddr string // HOST:PORT for Prometheus; empty: only on the socket
	// Pprof also serves Go's profiles (/debug/pprof/) on MetricsAddr: they
	// show a process's internals to whoever reaches that address, so only
	// when asked for.
	Pprof bool
	Node  node.Config
	Store chunkstore.Config
	QEMU  QEMUConfig
	// MigrationRecords bounds the ended migrations `sgctl migrations`
	// keeps (0: DefaultMigrationRecords).
	MigrationRecords int
	// KeepGatheredChunks keeps a gathered VM's chunks in the store as
	// well as in its files (cluster.Config.KeepGathered).
	KeepGatheredChunks bool
	Version            string
}

// QEMUConfig is how QEMU guests evicted to this node are resumed.
type QEMUConfig struct {
	// Resume starts an incoming guest at once on the lazy views of its
	// memory and disks.
	Resume bool
	// Binary is the QEMU to run; empty: qemu-system-<arch> of the guest's
	// architecture from PATH. Never taken from the network.
	Binary string
	// User is the account QEMU drops to; empty: qemu.DefaultUser if the
	// host has it, else "nobody"; "root" keeps root.
	User string
	// Sandbox is SandboxRequire (or empty): a QEMU without -sandbox is
	// refused; or SandboxOptional: it runs guests without one, warned.
	Sandbox string
}

// The values of QEMUConfig.Sandbox.
const (
	SandboxRequire  = "require"
	SandboxOptional = "optional"
)

// DefaultConfig returns the defaults for a data directory.
func DefaultConfig(dataDir string) Config {
	return Config{DataDir: dataDir, Node: node.DefaultConfig(), Store: chunkstore.DefaultConfig(),
		QEMU: QEMUConfig{Resume: true}}
}

// IdentityPath is where the node's key lives.
func (c Config) IdentityPath() string { return filepath.Join(c.DataDir, "identity.key") }

// SocketPath is the control socket's path.
func (c Config) SocketPath() string {
	if c.APISocket != "" {
		return c.APISocket
	}
	return filepath.Join(c.DataDir, "sgnode.sock")
}

// ChunkDir is where the disk tier keeps segments unless configured.
func (c Config) ChunkDir() string { return filepath.Join(c.DataDir, "chunks") }

// storeConfig is the chunk store's configuration: a disk budget without a
// directory keeps its segments in ChunkDir.
func (c Config) storeConfig() chunkstore.Config {
	s := c.Store
	if s.DiskDir == "" && s.DiskBudget > 0 {
		s.DiskDir = c.ChunkDir()
	}
	return s
}

// Validate reports the first thing wrong with c, naming the setting.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("no data directory")
	}
	if c.MigrationRecords < 0 {
		return errors.New("migration_records is negative")
	}
	if sb := c.QEMU.Sandbox; sb != "" && sb != SandboxRequire && sb != SandboxOptional {
		return fmt.Errorf("qemu_sandbox = %q: want %q or %q", sb, SandboxRequire, SandboxOptional)
	}
	if err := c.storeConfig().Validate(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}
