package githubemu

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Server is an Emulator listening: the API (and web flow) on one port and
// codeload on another, as github.com and codeload.github.com are different
// hosts.
type Server struct {
	// APIURL is both the REST API's base URL and the web host's (the OAuth
	// endpoints live under it).
	APIURL      string
	CodeloadURL string
	api, cl     *http.Server
}

// Listen serves e on two kernel-chosen ports of host (e.g. "127.0.0.1") and
// points e's links and redirects at them. Close stops both.
func (e *Emulator) Listen(host string) (*Server, error) {
	apiLn, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("githubemu: listen: %w", err)
	}
	clLn, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		apiLn.Close()
		return nil, fmt.Errorf("githubemu: listen: %w", err)
	}
	s := &Server{
		APIURL:      "http://" + apiLn.Addr().String(),
		CodeloadURL: "http://" + clLn.Addr().String(),
		api:         &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute},
		cl:          &http.Server{Handler: e.Codeload(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute},
	}
	e.SetURLs(s.APIURL, s.CodeloadURL)
	// Serve returns only ErrServerClosed, once Close is called.
	go func() { _ = s.api.Serve(apiLn) }()
	go func() { _ = s.cl.Serve(clLn) }()
	return s, nil
}

// Close stops both listeners and their connections.
func (s *Server) Close() error {
	return errors.Join(s.api.Close(), s.cl.Close())
}
