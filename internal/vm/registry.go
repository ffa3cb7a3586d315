package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Registry is the set of VMs a host knows, persisted as one JSON file that
// is replaced atomically on every change.
type Registry struct {
	path string
	mu   sync.Mutex
	vms  map[string]Spec
}

// OpenRegistry loads the registry at path (a missing file is empty).
func OpenRegistry(path string) (*Registry, error) {
	r := &Registry{path: path, vms: map[string]Spec{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("VM registry: %w", err)
	}
	var list []Spec
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("VM registry %s: %w", path, err)
	}
	for _, s := range list {
		r.vms[s.Name] = s
	}
	return r, nil
}

// Add registers s.
func (r *Registry) Add(s Spec) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.vms[s.Name]; ok {
		return fmt.Errorf("%s: %w", s.Name, ErrExists)
	}
	r.vms[s.Name] = s
	if err := r.saveLocked(); err != nil {
		delete(r.vms, s.Name)
		return err
	}
	return nil
}

// Remove forgets a VM (its files are left alone).
func (r *Registry) Remove(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.vms[name]
	if !ok {
		return fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	delete(r.vms, name)
	if err := r.saveLocked(); err != nil {
		r.vms[name] = s
		return err
	}
	return nil
}

// Get returns a VM's spec.
func (r *Registry) Get(name string) (Spec, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.vms[name]
	if !ok {
		return Spec{}, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	return s, nil
}

// List returns every VM, by name.
func (r *Registry) List() []Spec {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Spec, 0, len(r.vms))
	for _, s := range r.vms {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Spec) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (r *Registry) saveLocked() error {
	list := make([]Spec, 0, len(r.vms))
	for _, s := range r.vms {
		list = append(list, s)
	}
	slices.SortFunc(list, func(a, b Spec) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(r.path), ".vms-*.json")
	if err != nil {
		return fmt.Errorf("save VM registry: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save VM registry: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save VM registry: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save VM registry: %w", err)
	}
	if err := os.Rename(tmp.Name(), r.path); err != nil {
		return fmt.Errorf("save VM registry: %w", err)
	}
	return nil
}
