package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/vm"
	"github.com/sgrelay/sg/internal/vm/qemu"
)

func (d *Daemon) serveVMs(w http.ResponseWriter, _ *http.Request) {
	out := []api.VM{}
	for _, s := range d.vms.List() {
		out = append(out, vmToAPI(s))
	}
	writeJSON(w, http.StatusOK, out)
}

func vmToAPI(s vm.Spec) api.VM {
	v := api.VM{Name: s.Name, Driver: "files"}
	if s.QEMU != nil {
		v.Driver, v.QMP, v.Args = "qemu", s.QEMU.QMP, s.QEMU.Args
	}
	for _, r := range s.Regions {
		v.Regions = append(v.Regions, api.VMRegion{Name: r.Name, Kind: r.Kind.String(), Path: r.Path, Size: r.Size})
	}
	return v
}

func (d *Daemon) serveAddVM(w http.ResponseWriter, r *http.Request) {
	var req api.AddVMRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	v, err := d.addVM(r.Context(), req)
	answer(w, v, err)
}

// addVM registers a VM: from its image files, or from a running QEMU
// guest's QMP socket.
func (d *Daemon) addVM(ctx context.Context, req api.AddVMRequest) (*api.VM, error) {
	for _, p := range append(append(append([]string{}, req.Mem...), req.Disks...), req.State, req.QEMUQMP) {
		if p != "" && !filepath.IsAbs(p) {
			return nil, invalid("", fmt.Errorf("path %q is not absolute", p))
		}
	}
	var spec vm.Spec
	var err error
	switch {
	case req.QEMUQMP != "" && (len(req.Mem)+len(req.Disks) > 0 || req.State != ""):
		return nil, invalid("qemu_qmp", errors.New("a QEMU guest takes its memory and disks from its command line: no memory, disk or state images"))
	case req.QEMUQMP != "":
		spec, err = qemu.Inspect(ctx, req.Name, req.QEMUQMP)
	default:
		spec, err = vm.NewFilesSpec(req.Name, req.Mem, req.Disks, req.State)
	}
	if errors.Is(err, vm.ErrNoMemory) {
		return nil, invalid("mem", err)
	}
	if err != nil {
		return nil, invalid("", err)
	}
	if err := d.vms.Add(spec); errors.Is(err, vm.ErrExists) {
		return nil, conflict("", err)
	} else if err != nil {
		return nil, err
	}
	d.log.Info("VM registered", "vm", spec.Name, "regions", len(spec.Regions))
	v := vmToAPI(spec)
	return &v, nil
}

func (d *Daemon) serveRemoveVM(w http.ResponseWriter, r *http.Request) {
	err := d.vms.Remove(r.PathValue("name"))
	if errors.Is(err, vm.ErrNotFound) {
		err = notFound(err)
	}
	answer(w, struct{}{}, err)
}

// driver returns the driver of a registered VM.
func (d *Daemon) driver(name string) (vm.Driver, error) {
	s, err := d.vms.Get(name)
	if err != nil {
		return nil, err
	}
	if s.QEMU != nil {
		return qemu.NewDriver(s, filepath.Join(d.cfg.DataDir, "qemu-state"), d.log)
	}
	return &vm.Files{Spec: s}, nil
}
