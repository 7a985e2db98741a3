package nodeagent

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/samber/lo"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/network"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// Main runs `zeitwork nodeagent` until ctx ends. version is the binary's,
// recorded with the node's registration.
func Main(ctx context.Context, cfg config.NodeAgent, pool *pgxpool.Pool, version string, log *slog.Logger) error {
	cpu, mem := cfg.CPUMillis, cfg.MemoryMB
	if cpu == 0 {
		cpu = int32(goruntime.NumCPU() * 1000)
	}
	if mem == 0 {
		kb, err := meminfo("MemTotal:")
		if err != nil {
			return fmt.Errorf("NODE_MEMORY_MB is not set and the machine's memory is unknown: %w", err)
		}
		mem = int32(kb/1024) * 9 / 10 // the rest is the node's own
	}
	hostname, _ := os.Hostname()

	// Listening before registering lets the node advertise the API's real
	// port (NODEAGENT_ADDR may ask the kernel for one).
	apiAddr, proxyAddr, err := ListenAddrs(cfg)
	if err != nil {
		return err
	}
	api, err := net.Listen("tcp", apiAddr)
	if err != nil {
		return fmt.Errorf("NODEAGENT_ADDR %s: %w", apiAddr, err)
	}
	proxy, err := net.Listen("tcp", proxyAddr)
	if err != nil {
		api.Close()
		return fmt.Errorf("NODEPROXY_ADDR %s: %w", proxyAddr, err)
	}
	serving := false // once true, agent.Run owns the listeners
	defer func() {
		if !serving {
			api.Close()
			proxy.Close()
		}
	}()

	self, err := Register(ctx, pool, cfg.ClusterPrefix, cfg.StateDir, node.Registration{
		Hostname: hostname, InternalAddress: cfg.InternalAddress, APIAddress: advertisedAPI(cfg.InternalAddress, api.Addr()),
		Region: cfg.Region, CPUMillis: cpu, MemoryMB: mem, AgentVersion: version,
	})
	if err != nil {
		return err
	}
	log = log.With("node_id", self.ID)
	// A fresh credential at every start: only its hash is in the database,
	// and an agent that restarts simply proves itself with the new one.
	credential := node.NewCredential()
	if err := (node.Store{DB: pool}).SetCredential(ctx, self.ID, credential); err != nil {
		return err
	}
	log.InfoContext(ctx, "node registered", "ipv6_prefix", self.Prefix, "cpu_millis", cpu, "memory_mb", mem)

	rt, err := runtime.New(ctx, runtime.Config{
		Address: cfg.Containerd.Addr, Namespace: cfg.Containerd.Namespace, Owner: self.ID.String(), RuntimeHandler: cfg.RuntimeHandler,
		RuntimeConfigPath: cfg.RuntimeConfigPath, Snapshotter: cfg.Containerd.Snapshotter, LogDir: cfg.LogDir,
		PlainHTTPRegistries: cfg.Registry.PlainHTTP(), Logger: zlog.Component(log, "runtime"),
		PidsLimit: cfg.InstancePidsLimit, TmpSizeMB: cfg.InstanceTmpSizeMB, DiskLimitMB: cfg.InstanceDiskLimitMB, UserNS: cfg.InstanceUserNS,
		UserNSBase: cfg.InstanceUserNSBase, LogMaxBytes: cfg.InstanceLogMaxSize, PullStallTimeout: cfg.PullStallTimeout,
		StartBoost: lo.Ternary(cfg.InstanceStartBoost > 0, cfg.InstanceStartBoost, -1), StartBoostCPUMillis: cfg.InstanceStartBoostCPUMillis,
	})
	if err != nil {
		return err
	}
	defer rt.Close() // instances keep running: the shims own them

	ncfg := network.DefaultConfig()
	ncfg.Cluster, ncfg.NodeNetns, ncfg.Logger = cfg.ClusterPrefix, cfg.NodeNetns, zlog.Component(log, "network")
	ncfg.Blocked, ncfg.MaxConnsPerInstance = cfg.Egress.Blocked, cfg.MaxConnsPerInstance
	if cfg.NodeNetns != "" {
		ncfg.Table, ncfg.LinkPrefix, ncfg.NetnsPrefix = SimulatedNames(self.ID)
	}
	if cfg.Egress.Mode == config.EgressNAT {
		egress(&ncfg, cfg, self.ID, log)
	}
	dial := network.DialFrom(cfg.NodeNetns)
	netm, err := network.New(ncfg)
	if err != nil {
		return err
	}
	defer netm.Close()
	if err := netm.Apply(ctx); err != nil {
		return fmt.Errorf("network policy: %w", err)
	}

	policy := DefaultPolicy
	policy.PullTimeout = cfg.PullTimeout
	if cfg.Registry.Username != "" {
		policy.RegistryAuth = &runtime.Auth{Username: cfg.Registry.Username, Password: cfg.Registry.Password.Reveal()}
	}
	agent := &Agent{
		Pool: pool, Node: self, Observer: rt, Events: rt.Events, Token: cfg.Cluster.Token.Reveal(),
		ProxyToken: cfg.NodeProxy.Token.Reveal(),
		Version:    version, Handler: cfg.RuntimeHandler, Dial: dial,
		PollInterval: cfg.PollInterval, HeartbeatInterval: cfg.HeartbeatInterval, Log: log,
		Images: rt, ImageGCInterval: cfg.ImageGCInterval, ImageGCGrace: cfg.ImageGCGrace,
		Converger: &Converger{
			Pool: pool, NodeID: self.ID, Runtime: rt, Network: netm, Probe: HTTPProbe(dial),
			Policy: policy, Log: zlog.Component(log, "converge"),
		},
	}
	if len(cfg.OperatorURLs) > 0 {
		agent.Converger.Control = &Control{URLs: cfg.OperatorURLs, NodeID: self.ID, Secret: credential}
	} else {
		log.WarnContext(ctx, "OPERATOR_URL is not set: instances with environment variables cannot run here")
	}
	serving = true
	log.InfoContext(ctx, "node agent serving", "api", api.Addr().String(), "proxy", proxy.Addr().String(), "runtime_handler", cfg.RuntimeHandler)
	return agent.Run(ctx, api, proxy)
}

// Default ports of the node API and the node-proxy.
const (
	DefaultAPIPort   = "8082"
	DefaultProxyPort = "8090"
)

// ListenAddrs says where the node API and the node-proxy listen:
// NODEAGENT_ADDR and NODEPROXY_ADDR when set, else the node's private
// address, never every interface: the node API holds the cluster's
// credential checks, and neither has any business on a public address.
// The node-proxy's default is NODE_INTERNAL_ADDRESS itself, which is where
// the edge reaches it.
func ListenAddrs(cfg config.NodeAgent) (api, proxy string, err error) {
	api, proxy = cfg.APIAddr, cfg.ProxyAddr
	if api != "" && proxy != "" {
		return api, proxy, nil
	}
	host, port, err := net.SplitHostPort(cfg.InternalAddress)
	if err != nil || host == "" {
		return "", "", fmt.Errorf("NODE_INTERNAL_ADDRESS %q is not host:port, so NODEAGENT_ADDR and NODEPROXY_ADDR cannot default to it", cfg.InternalAddress)
	}
	if ip, perr := netip.ParseAddr(host); perr == nil && ip.IsUnspecified() {
		return "", "", fmt.Errorf("NODE_INTERNAL_ADDRESS %q names every interface; give the node's private address", cfg.InternalAddress)
	}
	if api == "" {
		api = net.JoinHostPort(host, DefaultAPIPort)
	}
	if proxy == "" {
		proxy = net.JoinHostPort(host, cmp.Or(port, DefaultProxyPort))
	}
	return api, proxy, nil
}

// meminfo reads one field of /proc/meminfo, in kB.
func meminfo(field string) (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == field {
			return strconv.ParseInt(fields[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/meminfo", field)
}

// SimulatedNames are the names an agent playing one of several nodes on a
// machine (NETWORK_NODE_NETNS set) gives its nftables table, its links and
// its instances' network namespaces: they carry the node's id, so agents
// on one machine, of one platform or several, never share one.
func SimulatedNames(node uuid.UUID) (table, linkPrefix, netnsPrefix string) {
	tag := node.String()[30:]
	return "zw" + tag, "z" + tag[:4], "zw-" + tag + "-"
}

// RemoveSimulatedNetns unpins the instance network namespaces of a
// simulated node whose instances were stopped behind its agent's back.
func RemoveSimulatedNetns(node uuid.UUID) error {
	_, _, prefix := SimulatedNames(node)
	return network.RemoveNetnsWithPrefix(network.DefaultConfig().NetnsDir, prefix)
}

// SimulatedUplink names a simulated node's uplink to the machine: the
// machine's end, and a glob that matches every simulated node's.
func SimulatedUplink(node uuid.UUID) (link, glob string) {
	return "zwu" + node.String()[30:], "zwu*"
}

// egress fills in how instances reach the internet: through the named
// uplink on a real node; through an uplink of its own to the machine on a
// simulated one, whose resolvers are then the machine's.
func egress(ncfg *network.Config, cfg config.NodeAgent, self uuid.UUID, log *slog.Logger) {
	ncfg.Uplink = cfg.Egress.Uplink
	if cfg.NodeNetns != "" {
		link, glob := SimulatedUplink(self)
		ncfg.Uplink = "uplink0" // inside the node's namespace
		// The machine's table is named like the node's namespace, which
		// whoever made it (dev, a test) knows and removes with it; deleting
		// the namespace takes the veth with it, but not the table.
		table := filepath.Base(cfg.NodeNetns)
		if c := table[0]; c < 'a' || c > 'z' {
			table = "zw-" + table // nft names start with a letter
		}
		ncfg.Machine = &network.MachineUplink{Link: link, LinkGlob: glob, Net: network.MachineUplinkNet(self), Table: table}
		if rs := machineResolvers(); len(rs) > 0 {
			ncfg.Resolvers = rs
		} else {
			log.Warn("the machine has no resolver instances can reach; they use public ones", "resolvers", ncfg.Resolvers)
		}
	}
	if len(cfg.Egress.Resolvers) > 0 {
		ncfg.Resolvers = cfg.Egress.Resolvers
	}
}

// machineResolvers are the machine's DNS servers that an instance can
// reach: not loopback ones (systemd-resolved's stub), for which the
// upstreams it lists are read instead.
func machineResolvers() []netip.Addr {
	var out []netip.Addr
	for _, path := range []string{"/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "nameserver" {
				continue
			}
			if a, err := netip.ParseAddr(f[1]); err == nil && !a.IsLoopback() && a.Zone() == "" {
				out = append(out, a.Unmap())
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// advertisedAPI is where the rest of the cluster reaches the node API
// listening on l: its address, or, when it listens on every interface, the
// internal address's host on its port.
func advertisedAPI(internal string, l net.Addr) string {
	ap, err := netip.ParseAddrPort(l.String())
	if err != nil {
		return l.String()
	}
	if !ap.Addr().IsUnspecified() {
		return ap.String()
	}
	host, _, err := net.SplitHostPort(internal)
	if err != nil {
		host = internal
	}
	return net.JoinHostPort(host, strconv.Itoa(int(ap.Port())))
}
