// Command app is the node agent tests' instance: an HTTP server on
// [::]:$PORT that says which address it was reached on, and can try to
// reach another address (to prove it cannot).
//
//	GET /          "<local address> <GREETING>"
//	GET /healthz   200
//	GET /dial?addr=HOST:PORT   "ok" if a TCP connection opened within 2s, else "error: ..."
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Println("got SIGTERM, exiting")
		os.Exit(0)
	}()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		local := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		host, _, _ := net.SplitHostPort(local.String())
		fmt.Fprintf(w, "%s %s", host, os.Getenv("GREETING"))
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	http.HandleFunc("/dial", func(w http.ResponseWriter, r *http.Request) {
		c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), 2*time.Second)
		if err != nil {
			fmt.Fprintf(w, "error: %v", err)
			return
		}
		c.Close()
		w.Write([]byte("ok"))
	})
	fmt.Println("listening on port", os.Getenv("PORT"))
	panic(http.ListenAndServe(":"+os.Getenv("PORT"), nil))
}
