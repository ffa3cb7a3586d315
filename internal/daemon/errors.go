package daemon

import (
	"errors"
	"net/http"

	"github.com/sgrelay/sg/api"
)

// requestError is a request the daemon refused for what it asked, not for
// a failure of its own: status says how (bad request, not found,
// conflict), and field, if set, names the request field at fault by its
// JSON name, so that a client can point its user at its own way of
// setting it (sgctl names the flag).
type requestError struct {
	status int
	field  string
	err    error
}

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// invalid is a request that cannot be carried out as asked (400).
func invalid(field string, err error) error {
	return &requestError{status: http.StatusBadRequest, field: field, err: err}
}

// conflict is a request the node's state refuses now (409): too few
// peers, a migration still open, a CID no peer holds.
func conflict(field string, err error) error {
	return &requestError{status: http.StatusConflict, field: field, err: err}
}

// notFound is a request for something this node does not have (404).
func notFound(err error) error {
	return &requestError{status: http.StatusNotFound, err: err}
}

// peersFailed is a request some peers did not carry out (502).
func peersFailed(err error) error {
	return &requestError{status: http.StatusBadGateway, err: err}
}

// writeError answers err with its status (500 for an error that is not a
// requestError: the daemon's own failure) and field.
func writeError(w http.ResponseWriter, err error) {
	status, field := http.StatusInternalServerError, ""
	var re *requestError
	if errors.As(err, &re) {
		status, field = re.status, re.field
	}
	writeJSON(w, status, api.ErrorBody{Error: err.Error(), Field: field})
}

// answer writes v, or err if set.
func answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}
