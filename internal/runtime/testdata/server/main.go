// Command server is the test image for internal/runtime: one static HTTP
// server whose behaviours the tests choose through its environment and
// request paths.
//
//	PORT          listen on 127.0.0.1:$PORT (the tests share the host network)
//	GREETING      body of GET /
//	EXIT_CODE     exit at once with this code, before listening
//	IGNORE_TERM   ignore SIGTERM (otherwise it logs and exits 0)
//	FORK_BOMB     become a busybox shell that starts 1000 background
//	              processes as fast as it can (bounded, so that a missing
//	              pids limit cannot take the machine down); at the first
//	              fork refused it prints "can't fork" and exits
//
//	GET /env?key=K         the value of $K
//	GET /log?line=L&n=N    print "L i" N times to stdout (i = 1..N), then reply
//	GET /exit?code=N       reply, then exit with code N
//	GET /alloc?mb=N        allocate and touch N MiB, keep it
//	GET /spin?ms=N         burn CPU for N ms of wall time; reply with the CPU µs used
//	GET /file?path=P       the contents of P
//	GET /run?arg=A&arg=B   run A with arguments B…; reply with "exit N" and the output
//	GET /keyctl            call keyctl(2) directly; reply "ok" or the errno
//	GET /i386              call getpid through the 32-bit x86 ABI in a child
//	                       process; reply "pid N", or that no answer came
//	GET /flood             write numbered lines to stdout without pause, for ever
//	GET /bomb?n=N          start up to N `/bin/busybox sleep` children without
//	                       waiting for them; reply how many started and the error
//	                       that stopped it, if any
package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var hoard [][]byte

// i386GetPID is getpid's number in the 32-bit x86 system call table.
const i386GetPID = 20

func main() {
	if len(os.Args) == 2 && os.Args[1] == "i386-getpid" {
		// The kernel answers an i386 binary's calls through this ABI. A
		// seccomp filter without it kills the calling thread, not the
		// process: the call is made on a thread of its own, and its
		// silence is the answer.
		got := make(chan uintptr, 1)
		go func() {
			goruntime.LockOSThread()
			got <- int80(i386GetPID)
		}()
		select {
		case r := <-got:
			fmt.Printf("pid %d\n", int32(r))
		case <-time.After(2 * time.Second):
			fmt.Println("no answer: the calling thread was killed")
		}
		os.Exit(0)
	}
	if os.Getenv("FORK_BOMB") != "" {
		// A shell needs no threads: unlike a Go process, it does not crash
		// at the limit but says plainly that a fork was refused.
		script := `i=0; while [ $i -lt 1000 ]; do /bin/busybox sleep 3600 >/dev/null 2>&1 & i=$((i+1)); done; echo bomb done; exec /bin/busybox sleep 3600`
		err := syscall.Exec("/bin/busybox", []string{"sh", "-c", script}, os.Environ())
		fmt.Println(err)
		os.Exit(1)
	}
	if code := os.Getenv("EXIT_CODE"); code != "" {
		n, _ := strconv.Atoi(code)
		fmt.Printf("exiting at once with %d\n", n)
		os.Exit(n)
	}
	sig := make(chan os.Signal, 1)
	if os.Getenv("IGNORE_TERM") != "" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sig, syscall.SIGTERM)
	}
	go func() {
		<-sig
		fmt.Println("got SIGTERM, exiting")
		os.Exit(0)
	}()

	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(os.Getenv("GREETING")))
	})
	http.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(os.Getenv(r.URL.Query().Get("key"))))
	})
	http.HandleFunc("/log", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil {
			n = 1
		}
		line := r.URL.Query().Get("line")
		out := bufio.NewWriter(os.Stdout)
		for i := 1; i <= n; i++ {
			fmt.Fprintf(out, "%s %d\n", line, i)
			if out.Buffered() > 3500 {
				out.Flush()
			}
		}
		out.Flush()
		w.Write([]byte("ok"))
	})
	http.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		w.Write([]byte("bye"))
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		go func() {
			time.Sleep(50 * time.Millisecond)
			fmt.Printf("exiting with %d on request\n", code)
			os.Exit(code)
		}()
	})
	http.HandleFunc("/alloc", func(w http.ResponseWriter, r *http.Request) {
		mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		for i := 0; i < mb; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			hoard = append(hoard, b)
		}
		fmt.Fprintf(w, "holding %d MiB", len(hoard))
	})
	http.HandleFunc("/spin", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		before := cpuMicros()
		end := time.Now().Add(time.Duration(ms) * time.Millisecond)
		x := 0
		for time.Now().Before(end) {
			for i := 0; i < 10000; i++ {
				x += i
			}
		}
		fmt.Fprintf(w, "%d", cpuMicros()-before+int64(x&0))
	})

	http.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(b)
	})
	http.HandleFunc("/run", func(w http.ResponseWriter, r *http.Request) {
		args := r.URL.Query()["arg"]
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			code = -1
			out = append(out, err.Error()...)
		}
		fmt.Fprintf(w, "exit %d\n%s", code, out)
	})
	http.HandleFunc("/keyctl", func(w http.ResponseWriter, r *http.Request) {
		// KEYCTL_GET_KEYRING_ID of the session keyring, creating it.
		const keyctl, getKeyringID, sessionKeyring = 250, 0, -3
		ringID := sessionKeyring
		_, _, errno := syscall.Syscall(keyctl, getKeyringID, uintptr(ringID), 1)
		if errno != 0 {
			fmt.Fprint(w, errno.Error())
			return
		}
		fmt.Fprint(w, "ok")
	})
	http.HandleFunc("/i386", func(w http.ResponseWriter, r *http.Request) {
		if !haveInt80 {
			fmt.Fprint(w, "no 32-bit x86 ABI on this architecture")
			return
		}
		out, err := exec.Command("/proc/self/exe", "i386-getpid").CombinedOutput()
		if err != nil {
			fmt.Fprintf(w, "%v %s", err, out)
			return
		}
		fmt.Fprintf(w, "%s", out)
	})
	http.HandleFunc("/flood", func(w http.ResponseWriter, r *http.Request) {
		go func() {
			pad := strings.Repeat("f", 100)
			for i := 1; ; i++ {
				fmt.Printf("flood %d %s\n", i, pad)
			}
		}()
		w.Write([]byte("flooding"))
	})
	http.HandleFunc("/bomb", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		started := 0
		var last error
		for range n {
			cmd := exec.Command("/bin/busybox", "sleep", "3600")
			if last = cmd.Start(); last != nil {
				break
			}
			go cmd.Wait()
			started++
		}
		fmt.Fprintf(w, "started %d", started)
		if last != nil {
			fmt.Fprintf(w, "; %v", last)
		}
	})

	fmt.Fprintln(os.Stderr, "stderr is captured too")
	fmt.Printf("listening on %s\n", os.Getenv("PORT"))
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
}

func cpuMicros() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano()/1000 + ru.Stime.Nano()/1000
}
