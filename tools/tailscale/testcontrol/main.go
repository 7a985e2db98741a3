// Command testcontrol is a Tailscale control plane and DERP relay for the
// bootstrap tests, built from Tailscale's own test control server
// (tailscale.com/tstest/integration/testcontrol) and DERP server, the way
// Tailscale's integration tests run them. It lives in this tools module so
// that the main module does not carry tailscale.com's dependencies: tests
// start it as a process and read one JSON line from its stdout.
//
//	testcontrol -listen 10.241.3.1 -auth-key tskey-test
//	{"control_url":"http://10.241.3.1:41234","derp":"10.241.3.1:40111"}
//
// It runs until its stdin is closed or it is signalled.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"syscall"

	"tailscale.com/derp/derpserver"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
)

func main() {
	listen := flag.String("listen", "127.0.0.1", "IP address to serve control and DERP on")
	authKey := flag.String("auth-key", "", "the auth key every node must present (empty: any)")
	magicDNS := flag.String("magicdns-domain", "", "MagicDNS suffix the nodes' names get (empty: none)")
	verbose := flag.Bool("v", false, "log control and DERP traffic to stderr")
	flag.Parse()
	logf := func(format string, args ...any) {
		if *verbose {
			log.Printf(format, args...)
		}
	}

	// DERP over TLS with a throwaway certificate, as the integration
	// tests do: InsecureForTests in the map makes clients accept it.
	d := derpserver.New(key.NewNode(), logf)
	dln, err := net.Listen("tcp", net.JoinHostPort(*listen, "0"))
	if err != nil {
		log.Fatalf("derp: %v", err)
	}
	derpSrv := httptest.NewUnstartedServer(derpserver.Handler(d))
	derpSrv.Listener.Close()
	derpSrv.Listener = dln
	derpSrv.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	derpSrv.StartTLS()
	derpPort := dln.Addr().(*net.TCPAddr).Port

	control := &testcontrol.Server{
		Logf: logf,
		DERPMap: &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{
			1: {RegionID: 1, RegionCode: "test", Nodes: []*tailcfg.DERPNode{{
				Name: "t1", RegionID: 1, HostName: *listen, IPv4: *listen, IPv6: "none",
				// No STUN: the nodes find each other's direct addresses
				// on their own network, or relay through DERP.
				STUNPort: -1, DERPPort: derpPort, InsecureForTests: true,
			}}},
		}},
		RequireAuthKey:   *authKey,
		MagicDNSDomain:   *magicDNS,
		AllNodesSameUser: true,
		// Peers are shown online, as a real control server shows nodes
		// connected to it.
		AllOnline: true,
	}
	cln, err := net.Listen("tcp", net.JoinHostPort(*listen, "0"))
	if err != nil {
		log.Fatalf("control: %v", err)
	}
	go func() { log.Fatal(http.Serve(cln, control)) }()

	out, _ := json.Marshal(map[string]string{
		"control_url": "http://" + cln.Addr().String(),
		"derp":        dln.Addr().String(),
	})
	fmt.Println(string(out))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); stop <- syscall.SIGTERM }()
	<-stop
	derpSrv.CloseClientConnections()
	derpSrv.Close()
	d.Close()
}
