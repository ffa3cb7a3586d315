package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sgrelay/sg/api"
)

func TestAdviseNamesTheFlag(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&api.Error{Status: 400, Field: "to", Message: `"x" matches no connected peer`}, `--to: "x" matches no connected peer (see sgctl peers)`},
		{&api.Error{Status: 400, Field: "direct", Message: "no more than one replica"}, "--direct: no more than one replica"},
		{&api.Error{Status: 409, Field: "secret", Message: "wrong or missing secret"}, "--secret: wrong or missing secret (evict --json prints it)"},
		{&api.Error{Status: 400, Field: "cid", Message: "bad CID"}, "cid: bad CID"}, // no flag sets it
		{&api.Error{Status: 500, Message: "disk full"}, "disk full"},
		{fmt.Errorf("%w at /x.sock (is it running?): refused", api.ErrNoDaemon), "(set --api or SG_API)"},
		{errors.New("plain"), "plain"},
	} {
		got := advise(c.err).Error()
		if !strings.Contains(got, c.want) {
			t.Errorf("advise(%q) = %q, want %q in it", c.err, got, c.want)
		}
	}
}
