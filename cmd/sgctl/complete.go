package main

import (
	"github.com/spf13/cobra"
)

// completeVMs completes registered VM names, asking the node; without a
// node it completes nothing rather than file names.
func completeVMs(e *env) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		vms, err := e.client().VMs(cmd.Context())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names := make([]string, 0, len(vms))
		for _, v := range vms {
			names = append(names, v.Name+"\t"+v.Driver)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// completePeers completes the IDs of connected peers, with their zones.
func completePeers(e *env) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		ps, err := e.client().Peers(cmd.Context())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var ids []string
		for _, p := range ps {
			if p.Connected {
				ids = append(ids, p.ID+"\t"+p.Zone)
			}
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	}
}
