package main

import (
	"errors"
	"fmt"

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
