// Command sockserve stands in for `zeitwork edge` on a simulated machine:
// it serves the socket systemd passes it named http, answering with its
// pid, and shuts down as the roles do on SIGTERM.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/sdlisten"
)

func main() {
	ls, err := sdlisten.Listeners()
	if err != nil || ls["http"] == nil {
		fmt.Fprintln(os.Stderr, "no socket named http:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, os.Getpid()) })}
	if err := httpapi.Serve(ctx, srv, ls["http"], 10*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
