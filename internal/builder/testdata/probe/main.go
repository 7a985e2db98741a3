// Command probe runs as a RUN step in the builder's network tests: it tries
// a TCP connection to each name=host:port argument and prints one line per
// target, "REACHED name" or "BLOCKED name (reason)". The host "gateway"
// stands for the step's default gateway, read from /proc/net/route; an
// argument nonce=… is ignored. With listen=N it listens instead, prints
// "LISTENING ip:port", and returns after N connections (or a minute).
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	for _, arg := range os.Args[1:] {
		name, addr, _ := strings.Cut(arg, "=")
		if name == "nonce" { // there to defeat BuildKit's cache, nothing to probe
			continue
		}
		if name == "listen" {
			listen(addr)
			continue
		}
		if host, port, err := net.SplitHostPort(addr); err == nil && host == "gateway" {
			gw, err := gateway()
			if err != nil {
				fmt.Printf("BLOCKED %s (no gateway: %v)\n", name, err)
				continue
			}
			addr = net.JoinHostPort(gw, port)
		}
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			fmt.Printf("BLOCKED %s (%s: %v)\n", name, addr, err)
			continue
		}
		c.Close()
		fmt.Printf("REACHED %s (%s)\n", name, addr)
	}
}

func listen(n string) {
	want, err := strconv.Atoi(n)
	if err != nil {
		fmt.Printf("bad listen=%s\n", n)
		os.Exit(2)
	}
	l, err := net.Listen("tcp4", ":0")
	if err != nil {
		fmt.Printf("listen: %v\n", err)
		os.Exit(2)
	}
	defer l.Close()
	var ip string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			ip = n.IP.String()
		}
	}
	fmt.Printf("LISTENING %s\n", net.JoinHostPort(ip, fmt.Sprint(l.Addr().(*net.TCPAddr).Port)))
	l.(*net.TCPListener).SetDeadline(time.Now().Add(time.Minute))
	for i := 0; i < want; i++ {
		c, err := l.Accept()
		if err != nil {
			fmt.Printf("stopped listening: %v\n", err)
			return
		}
		fmt.Printf("ACCEPTED %s\n", c.RemoteAddr())
		c.Close()
	}
}

// gateway is the IPv4 default route's gateway.
func gateway() (string, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 3 || fields[1] != "00000000" {
			continue
		}
		b, err := hex.DecodeString(fields[2])
		if err != nil || len(b) != 4 {
			continue
		}
		ip := make(net.IP, 4)
		binary.LittleEndian.PutUint32(ip, binary.BigEndian.Uint32(b))
		return ip.String(), nil
	}
	return "", fmt.Errorf("no default route")
}
