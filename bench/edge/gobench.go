package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// tableBench is the route table at 100,000 projects (3 instances each,
// 200,000 names), from the Go benchmarks of internal/edge: medians over go
// test -count runs. Lookups cycle over all 100,000 project hosts, as
// clients send them (lower case, half with a port) and mixed (upper case
// and a trailing dot, which must be normalised); the build is NewTable
// from rows already read.
type tableBench struct {
	lookupNs, lookupBytes, lookupAllocs float64
	mixedNs, mixedAllocs                float64
	buildNs, tableMiB                   float64
	runs                                int
}

// parseGoBench reads the output of
// go test -bench 100kHosts -benchmem ./internal/edge/.
func parseGoBench(path string) (tableBench, error) {
	f, err := os.Open(path)
	if err != nil {
		return tableBench{}, err
	}
	defer f.Close()
	metrics := map[string]map[string][]float64{} // benchmark → unit → values
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(fields[0], "Benchmark"), "-")
		if metrics[name] == nil {
			metrics[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return tableBench{}, fmt.Errorf("%s: %q: %w", path, sc.Text(), err)
			}
			metrics[name][fields[i+1]] = append(metrics[name][fields[i+1]], v)
		}
	}
	if err := sc.Err(); err != nil {
		return tableBench{}, err
	}
	lookup, mixed, build := metrics["Lookup100kHosts/AsSent"], metrics["Lookup100kHosts/Mixed"], metrics["BuildTable100kHosts"]
	if len(lookup["ns/op"]) == 0 || len(mixed["ns/op"]) == 0 || len(build["ns/op"]) == 0 {
		return tableBench{}, fmt.Errorf("%s: no BenchmarkLookup100kHosts/{AsSent,Mixed} or BenchmarkBuildTable100kHosts results", path)
	}
	return tableBench{
		lookupNs: median(lookup["ns/op"]), lookupBytes: median(lookup["B/op"]), lookupAllocs: median(lookup["allocs/op"]),
		mixedNs: median(mixed["ns/op"]), mixedAllocs: median(mixed["allocs/op"]),
		buildNs: median(build["ns/op"]), tableMiB: median(build["MiB-table"]),
		runs: len(lookup["ns/op"]),
	}, nil
}
