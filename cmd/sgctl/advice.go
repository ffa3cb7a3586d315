package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/api"
)

// flagAdvice names, for each request field the node may refuse
// (api.Error.Field), the flag that sets it and what else may help.
var flagAdvice = map[string]struct{ flag, hint string }{
	"to":         {"--to", "see sgctl peers"},
	"via":        {"--via", "see sgctl peers"},
	"from":       {"--from", "see sgctl peers"},
	"replicas":   {"--replicas", "see sgctl peers"},
	"direct":     {"--direct", ""},
	"redundancy": {"--redundancy", ""},
	"secret":     {"--secret", "evict --json prints it"},
	"mem":        {"--mem", ""},
	"qemu_qmp":   {"--qemu-qmp", ""},
}

// advise phrases err for a user of sgctl: a refused request names the
// flag at fault, and an unreachable node how to point sgctl at it.
func advise(err error) error {
	if errors.Is(err, api.ErrNoDaemon) {
		return fmt.Errorf("%w (set --api or SG_API)", err)
	}
	var ae *api.Error
	if !errors.As(err, &ae) {
		return err
	}
	a, ok := flagAdvice[ae.Field]
	if !ok {
		return err
	}
	if a.hint != "" {
		return fmt.Errorf("%s: %s (%s)", a.flag, ae.Message, a.hint)
	}
	return fmt.Errorf("%s: %s", a.flag, ae.Message)
}

// adviseErrors makes every command of the tree phrase a node's refusal in
// terms of its own flags (advise).
func adviseErrors(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if err := run(cmd, args); err != nil {
				return advise(err)
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		adviseErrors(sub)
	}
}
