package main

import (
	"strings"
	"testing"
	"time"
)

// What h2load 1.52 printed here against a Go HTTP/2 server (the progress
// lines cut).
const h2loadOut = `starting benchmark...
TLS Protocol: TLSv1.3
Cipher: TLS_AES_128_GCM_SHA256
Application protocol: h2

finished in 2.00s, 11458.00 req/s, 414.31KB/s
requests: 22916 total, 22920 started, 22916 done, 22910 succeeded, 6 failed, 0 errored, 0 timeout
status codes: 22910 2xx, 0 3xx, 0 4xx, 6 5xx
traffic: 828.61KB (848500) total, 89.87KB (92028) headers (space savings 95.82%), 335.68KB (343740) data
                     min         max         mean         sd        +/- sd
time for request:       47us     19.31ms       261us       433us    96.72%
time for connect:    25.42ms     48.34ms     33.18ms     10.31ms    75.00%
`

func TestParseH2load(t *testing.T) {
	r, err := parseH2load(h2loadOut)
	if err != nil {
		t.Fatal(err)
	}
	if r.rps != 11458 || r.requests != 22910 || r.mean != 261*time.Microsecond || r.cipher != "TLS_AES_128_GCM_SHA256" {
		t.Fatalf("parsed %+v", r)
	}
	if got := strings.Join(r.problems, "; "); got != "6 requests failed; 6 answers 5xx" {
		t.Fatalf("problems %q", got)
	}
	if _, err := parseH2load("starting benchmark...\n"); err == nil {
		t.Fatal("a report without results parsed")
	}
	if d, err := parseH2loadDuration("1.5s"); err != nil || d != 1500*time.Millisecond {
		t.Fatalf("1.5s: %v %v", d, err)
	}
}
