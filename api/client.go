package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

// Client talks to a local sgnode over its control socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{socket: path, http: &http.Client{Transport: tr}}
}

// ErrNoDaemon means nothing answers on the socket.
var ErrNoDaemon = errors.New("cannot reach sgnode")

func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://sgnode"+path, rd)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w at %s (is it running?): %v", ErrNoDaemon, c.socket, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var eb ErrorBody
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&eb) == nil && eb.Error != "" {
			return nil, &Error{Status: resp.StatusCode, Field: eb.Field, Message: eb.Error}
		}
		return nil, fmt.Errorf("sgnode answered %s", resp.Status)
	}
	return resp, nil
}

func (c *Client) getJSON(ctx context.Context, path string, out any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeBody(resp, out)
}

func decodeBody(resp *http.Response, out any) error {
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("bad answer from sgnode: %w", err)
	}
	return nil
}

// Status asks for the node's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.getJSON(ctx, "/v1/status", &s)
}

// Peers lists the node's peers, nearest first.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var ps []Peer
	return ps, c.getJSON(ctx, "/v1/peers", &ps)
}

// RemovePut drops the copies of a put this node made from the peers that
// hold them.
func (c *Client) RemovePut(ctx context.Context, cid string) (*RemovePutResult, error) {
	resp, err := c.do(ctx, http.MethodDelete, "/v1/puts/"+url.PathEscape(cid), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out RemovePutResult
	return &out, decodeBody(resp, &out)
}

// Put runs a put; progress (may be nil) sees each progress event.
func (c *Client) Put(ctx context.Context, req PutRequest, progress func(Progress)) (*PutResult, error) {
	ev, err := c.stream(ctx, "/v1/put", req, progress)
	if err != nil {
		return nil, err
	}
	if ev.Put == nil {
		return nil, errors.New("sgnode ended the put without a result")
	}
	return ev.Put, nil
}

// Get runs a get; progress (may be nil) sees each progress event.
func (c *Client) Get(ctx context.Context, req GetRequest, progress func(Progress)) (*GetResult, error) {
	ev, err := c.stream(ctx, "/v1/get", req, progress)
	if err != nil {
		return nil, err
	}
	if ev.Get == nil {
		return nil, errors.New("sgnode ended the get without a result")
	}
	return ev.Get, nil
}

// stream posts req and reads NDJSON events until the final one.
func (c *Client) stream(ctx context.Context, path string, req any, progress func(Progress)) (*Event, error) {
	return c.streamEvents(ctx, path, req, func(ev *Event) {
		if ev.Progress != nil && progress != nil {
			progress(*ev.Progress)
		}
	})
}

// streamEvents posts req, hands every progress event to onProgress and
// returns the final event.
func (c *Client) streamEvents(ctx context.Context, path string, req any, onProgress func(*Event)) (*Event, error) {
	resp, err := c.do(ctx, http.MethodPost, path, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("bad event from sgnode: %w", err)
		}
		switch {
		case ev.Error != "":
			return nil, errors.New(ev.Error)
		case ev.isProgress():
			onProgress(&ev)
		default:
			return &ev, nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read from sgnode: %w", err)
	}
	return nil, errors.New("sgnode closed the stream before the result")
}

// Metrics returns the node's Prometheus metrics in text format.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, err := c.do(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return string(b), err
}
