package main

import (
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/cli"
	"github.com/sgrelay/sg/internal/units"
)

func newVMCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "vm",
		Short: "Register VMs (add, list, rm) from images on disk or a running QEMU",
	}
	c.AddCommand(newVMAddCmd(e), newVMListCmd(e), newVMRemoveCmd(e))
	return c
}

func newVMAddCmd(e *env) *cobra.Command {
	var (
		qmp, state string
		mem, disks []string
		asJSON     bool
	)
	c := &cobra.Command{
		Use:   "add NAME (--qemu-qmp SOCKET | --mem FILE... [--disk FILE]... [--state FILE])",
		Short: "Register a VM to evict",
		Example: `  sgctl vm add web1 --mem web1.mem --disk web1.disk
  sgctl vm add db1 --qemu-qmp /run/qemu/db1.qmp`,
		Args: cli.ExactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.AddVMRequest{Name: args[0]}
			var err error
			if req.Mem, err = absPaths(mem); err != nil {
				return err
			}
			if req.Disks, err = absPaths(disks); err != nil {
				return err
			}
			if state != "" {
				if req.State, err = filepath.Abs(state); err != nil {
					return err
				}
			}
			if qmp != "" {
				if req.QEMUQMP, err = filepath.Abs(qmp); err != nil {
					return err
				}
			}
			v, err := e.client().AddVM(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, v)
			}
			fmt.Fprintf(e.stdout, "registered %s (%s):", v.Name, v.Driver)
			for _, r := range v.Regions {
				fmt.Fprintf(e.stdout, " %s %s", r.Name, units.FormatSize(r.Size))
			}
			fmt.Fprintln(e.stdout)
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&qmp, "qemu-qmp", "", "a running QEMU guest's QMP `socket` (the qemu driver)")
	fl.StringArrayVar(&mem, "mem", nil, "memory `image` (repeatable)")
	fl.StringArrayVar(&disks, "disk", nil, "disk `image` (repeatable)")
	fl.StringVar(&state, "state", "", "device state `file`")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func absPaths(ps []string) ([]string, error) {
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

func newVMListCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List registered VMs",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			vms, err := e.client().VMs(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
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
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newVMRemoveCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:               "rm NAME",
		Aliases:           []string{"remove"},
		Short:             "Unregister a VM (its images stay)",
		Args:              cli.ExactArgs("NAME"),
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.client().RemoveVM(cmd.Context(), args[0])
		},
	}
}
