package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sgrelay/sg/api"
)

func TestWriteErrorStatusAndField(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		field  string
	}{
		{invalid("to", errors.New("no such peer")), http.StatusBadRequest, "to"},
		{fmt.Errorf("evict: %w", conflict("replicas", errors.New("too few peers"))), http.StatusConflict, "replicas"},
		{notFound(errors.New("no such VM")), http.StatusNotFound, ""},
		{peersFailed(errors.New("a target did not answer")), http.StatusBadGateway, ""},
		{errors.New("disk full"), http.StatusInternalServerError, ""},
	} {
		rec := httptest.NewRecorder()
		writeError(rec, c.err)
		var body api.ErrorBody
		if err := json.NewDecoder(rec.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		if rec.Code != c.status || body.Field != c.field || body.Error != c.err.Error() {
			t.Errorf("%v: answered %d %+v, want %d with field %q", c.err, rec.Code, body, c.status, c.field)
		}
	}
}

// A streamed request that fails before its first event is answered with
// its error's status; one that fails after ends its stream with an error
// event.
func TestEventStreamEnd(t *testing.T) {
	rec := httptest.NewRecorder()
	newEventStream(rec).end(api.Event{}, invalid("to", errors.New("no such peer")))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"field":"to"`) {
		t.Fatalf("failed before streaming: %d %s", rec.Code, rec.Body)
	}

	rec = httptest.NewRecorder()
	ev := newEventStream(rec)
	ev.progress(api.Event{Progress: &api.Progress{Done: 1, Total: 2}})
	ev.progress(api.Event{Progress: &api.Progress{Done: 2, Total: 2}}) // within 200 ms: dropped
	ev.end(api.Event{}, errors.New("the destination went away"))
	lines := strings.Split(strings.TrimSpace(rec.Body.String()), "\n")
	if rec.Code != http.StatusOK || len(lines) != 2 || !strings.Contains(lines[0], `"done":1`) || !strings.Contains(lines[1], `"error":"the destination went away"`) {
		t.Fatalf("failed while streaming: %d %q", rec.Code, lines)
	}

	rec = httptest.NewRecorder()
	newEventStream(rec).end(api.Event{Put: &api.PutResult{CID: "x"}}, nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"cid":"x"`) {
		t.Fatalf("succeeded: %d %s", rec.Code, rec.Body)
	}
}
