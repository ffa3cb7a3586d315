package daemon

import (
	"os"
	"path/filepath"

	"github.com/sgrelay/sg/api"
)

// keepSecrets writes the secret of each sealed manifest of an eviction to
// <data>/secrets/<manifest CID>, mode 0600, and records where in the
// report. Without the secret nobody can gather the VM from its
// intermediates again, and the report alone is easy to lose; a secret
// that cannot be written is still in the report, so the eviction stands.
func (d *Daemon) keepSecrets(res *api.EvictResult) {
	dir := filepath.Join(d.cfg.DataDir, "secrets")
	for i, v := range res.VMs {
		if v.ManifestSecret == "" {
			continue
		}
		path := filepath.Join(dir, v.Manifest)
		err := os.MkdirAll(dir, 0o700)
		if err == nil {
			err = os.WriteFile(path, []byte(v.ManifestSecret+"\n"), 0o600)
		}
		if err != nil {
			d.log.Warn("manifest secret not kept on disk (it is in the eviction's report)", "vm", v.Name, "err", err)
			continue
		}
		res.VMs[i].SecretFile = path
	}
}
