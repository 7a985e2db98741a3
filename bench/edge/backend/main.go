// Command backend is the app behind both proxies in the edge benchmark: it
// listens on n loopback ports (one per "node"), prints each address on a
// line of its own, and answers every request with the same short body over
// keep-alive connections. It runs as a process of its own so that it shares
// no Go runtime with the benchmark driver or the edge.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	n := flag.Int("n", 3, "ports to listen on")
	text := flag.String("body", "hello from the backend\n", "the answer to every request")
	flag.Parse()
	body := []byte(*text)
	length := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain; charset=utf-8"}
		w.Header()["Content-Length"] = []string{length}
		w.Write(body) //nolint:errcheck
	})
	errs := make(chan error, *n)
	for range *n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "backend:", err)
			os.Exit(1)
		}
		fmt.Println(l.Addr())
		go func() {
			errs <- (&http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}).Serve(l)
		}()
	}
	fmt.Fprintln(os.Stderr, "backend:", <-errs)
	os.Exit(1)
}
