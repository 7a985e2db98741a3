// Command app is the node agent tests' instance: an HTTP server on
// [::]:$PORT that says which address it was reached on, and can try to
// reach another address (to prove it cannot).
//
//	EXIT_CODE=N    exit at once with N (a crashing app)
//	NO_LISTEN=1    never listen (an app on the wrong port)
//	ALLOC_MB=N     allocate and touch N MiB before listening (an app too big for its limit)
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
	"strconv"
	"syscall"
	"time"
)

func main() {
	if code := os.Getenv("EXIT_CODE"); code != "" {
		n, _ := strconv.Atoi(code)
		fmt.Println("exiting at once with", n)
		os.Exit(n)
	}
	if mb, _ := strconv.Atoi(os.Getenv("ALLOC_MB")); mb > 0 {
		hoard := make([]byte, mb<<20)
		for i := range hoard {
			hoard[i] = 1
		}
		fmt.Println("allocated", len(hoard)>>20, "MiB")
	}
	if os.Getenv("NO_LISTEN") != "" {
		fmt.Println("not listening on purpose")
		for {
			time.Sleep(time.Hour) // a bare select{} would be a deadlock to the Go runtime
		}
	}
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
	http.HandleFunc("/hostname", func(w http.ResponseWriter, r *http.Request) {
		h, _ := os.Hostname()
		w.Write([]byte(h))
	})
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
