package main

import (
	"context"
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/units"
)

func cmdVM(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: sgctl vm add|list|rm", errUsage)
	}
	switch args[0] {
	case "add":
		return cmdVMAdd(ctx, e, args[1:])
	case "list", "ls":
		return cmdVMList(ctx, e, args[1:])
	case "rm", "remove":
		return cmdVMRemove(ctx, e, args[1:])
	}
	return fmt.Errorf("%w: unknown 'sgctl vm %s' (add, list, rm)", errUsage, args[0])
}

func cmdVMAdd(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "vm add", "NAME (--qemu-qmp SOCKET | --mem FILE [--mem FILE]... [--disk FILE]... [--state FILE]) [--json]")
	qmp := fs.String("qemu-qmp", "", "a running QEMU guest's QMP socket (the qemu driver)")
	var mem, disks listFlag
	fs.Var(&mem, "mem", "memory image (repeatable)")
	fs.Var(&disks, "disk", "disk image (repeatable)")
	state := fs.String("state", "", "device state blob")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, reorder(fs, args), 1); err != nil {
		return err
	}
	abs := func(ps []string) ([]string, error) {
		var out []string
		for _, p := range ps {
			a, err := filepath.Abs(p)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
		return out, nil
	}
	req := api.AddVMRequest{Name: fs.Arg(0)}
	var err error
	if req.Mem, err = abs(mem); err != nil {
		return err
	}
	if req.Disks, err = abs(disks); err != nil {
		return err
	}
	if *state != "" {
		if req.State, err = filepath.Abs(*state); err != nil {
			return err
		}
	}
	if *qmp != "" {
		if req.QEMUQMP, err = filepath.Abs(*qmp); err != nil {
			return err
		}
	}
	v, err := e.client().AddVM(ctx, req)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, v)
	}
	fmt.Fprintf(e.stdout, "registered %s (%s):", v.Name, v.Driver)
	for _, r := range v.Regions {
		fmt.Fprintf(e.stdout, " %s %s", r.Name, units.FormatSize(r.Size))
	}
	fmt.Fprintln(e.stdout)
	return nil
}

func cmdVMList(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "vm list", "[--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	vms, err := e.client().VMs(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, vms)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDRIVER\tREGION\tSIZE\tPATH")
	for _, v := range vms {
		for i, r := range v.Regions {
			name, drv := v.Name, v.Driver
			if i > 0 {
				name, drv = "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, drv, r.Name, units.FormatSize(r.Size), r.Path)
		}
	}
	return tw.Flush()
}

func cmdVMRemove(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "vm rm", "NAME")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	return e.client().RemoveVM(ctx, fs.Arg(0))
}
