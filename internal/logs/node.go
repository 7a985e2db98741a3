package logs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/node"
)

// Nodes reaches the node APIs instances' logs are read from.
type Nodes struct {
	// Client defaults to one without an overall timeout: a follow lasts
	// as long as the reader stays.
	Client *http.Client
	// Token is the cluster token the node APIs require.
	Token string
	// URL is the base URL of a node's API.
	URL func(node.Node) string
}

// APIPort is the URL of a node's API: the address the agent advertised,
// or for an agent that advertised none, the node's internal host (its
// internal address names the node-proxy) on port.
func APIPort(port int) func(node.Node) string {
	return func(n node.Node) string {
		if n.APIAddress != "" {
			return "http://" + n.APIAddress
		}
		host, _, err := net.SplitHostPort(n.InternalAddress)
		if err != nil {
			host = n.InternalAddress
		}
		return "http://" + net.JoinHostPort(host, strconv.Itoa(port))
	}
}

var (
	// errNoLogs: the node holds no log for the instance (not started yet,
	// or removed longer ago than the node keeps logs).
	errNoLogs = errors.New("the node holds no log for this instance")
	// errUnreachable: the node API did not answer as it should.
	errUnreachable = errors.New("node unreachable")
)

// dialTimeout bounds how long a node that is down holds a reader up.
const dialTimeout = 5 * time.Second

var defaultClient = &http.Client{Transport: &http.Transport{
	DialContext:           (&net.Dialer{Timeout: dialTimeout}).DialContext,
	ResponseHeaderTimeout: 30 * time.Second,
	MaxIdleConnsPerHost:   4,
}}

// open asks n for inst's log from offset; it answers the body and the
// offset it really starts at (0 when the node's log was rotated since).
func (ns Nodes) open(ctx context.Context, n node.Node, inst uuid.UUID, offset int64, follow bool) (io.ReadCloser, int64, error) {
	if ns.URL == nil {
		return nil, 0, fmt.Errorf("%w: this API is not configured to reach node APIs", errUnreachable)
	}
	q := url.Values{"offset": {strconv.FormatInt(offset, 10)}}
	if follow {
		q.Set("follow", "true")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ns.URL(n)+"/v1/instances/"+inst.String()+"/logs?"+q.Encode(), nil)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	req.Header.Set("Authorization", "Bearer "+ns.Token)
	client := ns.Client
	if client == nil {
		client = defaultClient
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	switch res.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		res.Body.Close()
		return nil, 0, errNoLogs
	default:
		res.Body.Close()
		return nil, 0, fmt.Errorf("%w: node %s answered %s", errUnreachable, n.Hostname, res.Status)
	}
	start, err := strconv.ParseInt(res.Header.Get("X-Log-Offset"), 10, 64)
	if err != nil {
		start = 0 // a node that cannot resume serves everything
	}
	if start != offset && start != 0 {
		res.Body.Close()
		return nil, 0, fmt.Errorf("%w: node %s started at %d, asked for %d", errUnreachable, n.Hostname, start, offset)
	}
	return res.Body, start, nil
}
