// Package api is the contract between sgnode and its clients: the request
// and response types of the control API, and a Go client for it.
//
// Transport: HTTP/JSON over a unix socket that only root (mode 0600) can
// open. Long operations (put, get, evict and gather) answer with an
// NDJSON stream of Event lines: progress while they run, then exactly one
// line carrying the result or the error.
//
// A refused request (or a long one that fails before its first event) is
// answered with a 4xx or 5xx status and an ErrorBody, whose Field names
// the request field at fault, if one is; Client returns it as an *Error,
// so that a front end can point at its own way of setting that field.
//
//	GET  /v1/status   Status
//	GET  /v1/peers    []Peer
//	POST /v1/put      PutRequest  → stream of Event{Progress | Put | Error}
//	DELETE /v1/puts/{cid}  RemovePutResult
//	POST /v1/get      GetRequest  → stream of Event{Progress | Get | Error}
//	GET  /v1/vms      []VM
//	POST /v1/vms      AddVMRequest → VM
//	DELETE /v1/vms/{name}
//	POST /v1/evict    EvictRequest → stream of Event{EvictProgress | Evict | Error}
//	GET  /v1/migrations []Migration
//	DELETE /v1/migrations/{id}
//	POST /v1/migrations/prune
//	POST /v1/gather   GatherRequest → stream of Event{Progress | Gather | Error}
//	POST /v1/verify   VerifyRequest → VerifyResult
//	GET  /metrics     Prometheus text format
package api
