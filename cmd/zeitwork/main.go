// Command zeitwork is the whole platform in one binary: each role (api,
// operator, nodeagent, builder, edge, ...) and the client commands are
// subcommands. See `zeitwork help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/zeitwork/zeitwork/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.Env{Environ: os.Environ(), Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
