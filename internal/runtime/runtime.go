package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
	logrusslog "github.com/sirupsen/logrus/hooks/slog"

	"github.com/zeitwork/zeitwork/internal/runtime/logwriter"
)

// Runtime handlers: runc where there is no KVM, Kata (a microVM per
// instance) in production.
const (
	HandlerRunc = "io.containerd.runc.v2"
	HandlerKata = "io.containerd.kata.v2"
)

// Errors callers branch on. Every error the Runtime returns wraps one of
// these where one applies, and always says which instance or image it is about.
var (
	// ErrImageNotFound: the registry does not have the image.
	ErrImageNotFound = errors.New("image not found")
	// ErrUnauthorized: the registry refused the credentials, or wanted some.
	ErrUnauthorized = errors.New("registry refused access")
	// ErrImageNotPulled: Create was called before Pull.
	ErrImageNotPulled = errors.New("image not pulled")
	// ErrNotFound: no instance with that id in this Runtime's namespace.
	ErrNotFound = errors.New("instance not found")
	// ErrExists: Create for an instance that already exists.
	ErrExists = errors.New("instance already exists")
	// ErrInvalidSpec: the Spec cannot be run as given.
	ErrInvalidSpec = errors.New("invalid instance spec")
)

// Config says where containerd is and how instances are run. The agent
// builds it from its own configuration; only Address, Namespace, Owner
// and LogDir have no default.
type Config struct {
	// Address is containerd's socket.
	Address string
	// Namespace is the containerd namespace the instances are created in.
	// Nothing outside it is touched.
	Namespace string
	// Owner names whoever runs this Runtime (the node agent passes its node
	// id). Every container it creates carries it as a label, and List,
	// Status, Start, Stop and Events see only containers with this owner:
	// another platform sharing the namespace (a test run next to
	// `zeitwork dev`), or a container someone made by hand, is never
	// adopted, stopped or reported. Letters, digits, '.', '_' and '-'.
	Owner string
	// RuntimeHandler is the shim: HandlerRunc (default) or HandlerKata.
	RuntimeHandler string
	// RuntimeConfigPath, if set, is handed to the shim as its configuration
	// file (runtime options ConfigPath). Kata reads it to pick the hypervisor
	// (configuration-clh.toml, configuration-fc.toml); see KATA.md. Leave it
	// empty for runc.
	RuntimeConfigPath string
	// Snapshotter unpacks images for instances; "" is containerd's default
	// (overlayfs). Kata with Firecracker needs "devmapper".
	Snapshotter string
	// LogDir holds the instances' stdout/stderr, in a directory per
	// namespace. It must be on a disk the shims can write as root.
	LogDir string
	// LogMaxBytes bounds one instance's log file: beyond it the file is
	// rotated to <id>.log.1 (one generation kept), so an instance keeps at
	// most about twice this much. Default 10 MiB.
	LogMaxBytes int64
	// LogWriter is the executable the shims run to write instances' logs
	// (package logwriter): "" is this process's own executable, which is
	// what the zeitwork binary wants, or cmd/zeitwork-logwriter where it
	// lies next to it. LogWriterNone has the shim append to
	// the file itself, bounded only by the check every LogCheckInterval
	// (for a shim without binary:// logging).
	LogWriter string
	// logWriterBeside: LogWriter is this process's executable, and the
	// writer alone next to it is preferred (logwriter.Beside).
	logWriterBeside bool
	// LogCheckInterval is how often log sizes are checked, and the logs of
	// removed instances looked for. Default 5s.
	LogCheckInterval time.Duration
	// LogRetention is how long the logs of a removed instance are kept.
	// Default 24h.
	LogRetention time.Duration
	// PidsLimit bounds the processes and threads of one instance, so a
	// fork bomb exhausts its own allowance and not the node's. Default 512.
	PidsLimit int64
	// TmpSizeMB bounds the instance's /tmp, a tmpfs charged to its memory.
	// Default 64.
	TmpSizeMB int
	// DiskLimitMB bounds what an instance writes to its own filesystem
	// (the snapshot's writable layer): overlayfs on these disks has no
	// quota, so every LogCheckInterval the layers' usage is measured and an
	// instance over the bound is killed and its Status says so
	// (DiskKilled); the agent fails it rather than restart it on the same
	// layer. 0: no bound.
	DiskLimitMB int64
	// UserNS chooses user namespaces for instances: UserNSAuto (default)
	// uses them with runc where the kernel allows, UserNSOn refuses to
	// start without them, UserNSOff never uses them. Kata never does: the
	// microVM is the boundary there, and its guest has no use for them.
	UserNS string
	// UserNSBase is the host uid and gid an instance's root maps to; the
	// 65536 ids from it are the instances' (one range per node: every
	// instance shares it, so that an image is remapped once, not once per
	// instance). Nothing else on the node may use them. Default 1<<30.
	UserNSBase uint32
	// StartBoost is how long after each start an instance may use up to
	// StartBoostCPUMillis rather than its Spec's CPUMillis (see boost.go):
	// its start is mostly CPU, and its limit is for serving. Default 10s;
	// negative: no boost. Never with Kata.
	StartBoost time.Duration
	// StartBoostCPUMillis is the CPU limit while the start boost lasts; an
	// instance allowed more keeps its own. Default 1000 (a core).
	StartBoostCPUMillis int
	// PullStallTimeout is how long a pull may go without a byte from the
	// registry (connecting, waiting for an answer, mid-download) before it
	// fails with ErrRegistryStalled. Default 30s.
	PullStallTimeout time.Duration
	// PlainHTTPRegistries are registry hosts (host or host:port) spoken to
	// over plain HTTP. Every other registry is HTTPS only.
	PlainHTTPRegistries []string
	// Logger receives the Runtime's own logs; nil discards them.
	Logger *slog.Logger
}

// LogWriterNone: Config.LogWriter for shims that write the log file
// themselves.
const LogWriterNone = "none"

// User namespace modes, Config.UserNS.
const (
	UserNSAuto = "auto"
	UserNSOn   = "on"
	UserNSOff  = "off"
)

func (c *Config) setDefaults() {
	if c.RuntimeHandler == "" {
		c.RuntimeHandler = HandlerRunc
	}
	if c.PidsLimit == 0 {
		c.PidsLimit = 512
	}
	if c.TmpSizeMB == 0 {
		c.TmpSizeMB = 64
	}
	if c.PullStallTimeout == 0 {
		c.PullStallTimeout = 30 * time.Second
	}
	if c.StartBoost == 0 {
		c.StartBoost = 10 * time.Second
	}
	if c.StartBoostCPUMillis == 0 {
		c.StartBoostCPUMillis = 1000
	}
	if c.LogWriter == "" {
		if exe, err := logwriter.Executable(); err == nil {
			c.LogWriter, c.logWriterBeside = exe, true
		} else {
			c.LogWriter = LogWriterNone
		}
	}
	if c.UserNS == "" {
		c.UserNS = UserNSAuto
	}
	if c.UserNSBase == 0 {
		c.UserNSBase = 1 << 30
	}
	if c.LogMaxBytes == 0 {
		c.LogMaxBytes = 10 << 20
	}
	if c.LogCheckInterval == 0 {
		c.LogCheckInterval = 5 * time.Second
	}
	if c.LogRetention == 0 {
		c.LogRetention = 24 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Address == "" {
		errs = append(errs, invalidField("Address", "containerd socket is required"))
	}
	if err := identifiers.Validate(c.Namespace); err != nil {
		errs = append(errs, invalidField("Namespace", err.Error()))
	}
	if !validOwner(c.Owner) {
		errs = append(errs, invalidField("Owner", fmt.Sprintf("%q is not 1-128 letters, digits, '.', '_' or '-'", c.Owner)))
	}
	if !filepath.IsAbs(c.LogDir) {
		errs = append(errs, invalidField("LogDir", fmt.Sprintf("%q is not an absolute path", c.LogDir)))
	}
	if c.LogMaxBytes < 4096 {
		errs = append(errs, invalidField("LogMaxBytes", fmt.Sprintf("%d is below 4096", c.LogMaxBytes)))
	}
	if c.LogWriter != LogWriterNone && !filepath.IsAbs(c.LogWriter) {
		errs = append(errs, invalidField("LogWriter", fmt.Sprintf("%q is not an absolute path", c.LogWriter)))
	}
	if c.PullStallTimeout < 0 {
		errs = append(errs, invalidField("PullStallTimeout", "must not be negative"))
	}
	if c.LogCheckInterval < 0 || c.LogRetention < 0 {
		errs = append(errs, invalidField("LogCheckInterval, LogRetention", "must not be negative"))
	}
	if c.StartBoostCPUMillis < 10 {
		errs = append(errs, invalidField("StartBoostCPUMillis", fmt.Sprintf("%d is below 10", c.StartBoostCPUMillis)))
	}
	if c.PidsLimit < 16 {
		errs = append(errs, invalidField("PidsLimit", fmt.Sprintf("%d is below 16", c.PidsLimit)))
	}
	if c.TmpSizeMB < 1 {
		errs = append(errs, invalidField("TmpSizeMB", fmt.Sprintf("%d is below 1", c.TmpSizeMB)))
	}
	if c.UserNS != UserNSAuto && c.UserNS != UserNSOn && c.UserNS != UserNSOff {
		errs = append(errs, invalidField("UserNS", fmt.Sprintf("%q is not auto, on or off", c.UserNS)))
	}
	if c.UserNSBase < userNSSize || c.UserNSBase > 1<<32-1-userNSSize {
		errs = append(errs, invalidField("UserNSBase", fmt.Sprintf("%d leaves no room for %d ids above the host's own", c.UserNSBase, userNSSize)))
	}
	if c.UserNS == UserNSOn && c.RuntimeHandler == HandlerKata {
		errs = append(errs, invalidField("UserNS", "on is for runc; Kata instances are isolated by their microVM"))
	}
	if !strings.HasPrefix(c.RuntimeHandler, "io.containerd.") {
		errs = append(errs, invalidField("RuntimeHandler", fmt.Sprintf("%q is not a containerd runtime name (io.containerd.<name>.<version>)", c.RuntimeHandler)))
	}
	return errors.Join(errs...)
}

// validOwner keeps the owner usable as a label value inside a containerd
// filter expression without quoting rules to get wrong.
func validOwner(o string) bool {
	if o == "" || len(o) > 128 {
		return false
	}
	for _, c := range o {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Runtime runs instances as containerd containers in one namespace. It
// holds no state of its own: everything it knows it reads back from
// containerd, so a new Runtime after an agent restart sees (adopts) what the
// previous one started, and closing it never touches a running instance.
type Runtime struct {
	cfg    Config
	client *client.Client
	log    *slog.Logger
	clog   *log.Entry   // containerd's own client logs, into log
	logDir string       // cfg.LogDir/<namespace>
	userNS bool         // instances get a user namespace
	http   *http.Client // for registries

	remapMu sync.Map // re-owned layer snapshot name → *sync.Mutex: one create makes it at a time

	boosts atomic.Int64 // starts with a boost since a look found none due (boost.go)

	imagesMu  sync.Mutex
	imageUsed map[string]time.Time // image name → last seen in use, by PruneImages

	logsMu sync.Mutex
	logs   map[uuid.UUID]*logState

	stop context.CancelFunc
	done sync.WaitGroup
}

// New connects to containerd and starts the Runtime's housekeeping (log
// rotation, OOM bookkeeping). ctx bounds the connection attempt only.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("runtime config: %w", err)
	}
	c, err := client.New(cfg.Address, client.WithDefaultNamespace(cfg.Namespace))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", cfg.Address, err)
	}
	if _, err := c.Version(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("containerd at %s does not answer: %w", cfg.Address, err)
	}
	r := &Runtime{
		cfg:       cfg,
		client:    c,
		log:       cfg.Logger.With("namespace", cfg.Namespace, "owner", cfg.Owner, "runtime_handler", cfg.RuntimeHandler),
		clog:      containerdLogger(cfg.Logger.With("namespace", cfg.Namespace, "source", "containerd")),
		logDir:    filepath.Join(cfg.LogDir, cfg.Namespace),
		logs:      map[uuid.UUID]*logState{},
		imageUsed: map[string]time.Time{},
		http:      registryClient(cfg.PullStallTimeout),
	}
	if err := os.MkdirAll(r.logDir, 0o750); err != nil {
		c.Close()
		return nil, fmt.Errorf("log directory: %w", err)
	}
	r.checkShim(ctx)
	if cfg.UserNS != UserNSOff && cfg.RuntimeHandler != HandlerKata {
		ok, why := userNSSupported()
		switch {
		case ok:
			r.userNS = true
		case cfg.UserNS == UserNSOn:
			c.Close()
			return nil, fmt.Errorf("runtime config: UserNS is on, but %s", why)
		default:
			r.log.WarnContext(ctx, "instances run without a user namespace: root in an instance is root on the node", "reason", why)
		}
	}

	bg, stop := context.WithCancel(context.WithoutCancel(r.ns(ctx)))
	r.stop = stop
	r.boosts.Store(1) // a previous Runtime may have left boosts to lower
	r.done.Add(3)
	go func() { defer r.done.Done(); r.rotateLoop(bg) }()
	go func() { defer r.done.Done(); r.watchOOM(bg) }()
	go func() { defer r.done.Done(); r.boostLoop(bg) }()
	return r, nil
}

// Close stops the housekeeping and closes the connection. Instances keep
// running: their shims, not this process, own them and their logs.
func (r *Runtime) Close() error {
	r.stop()
	r.done.Wait()
	return r.client.Close()
}

// ns puts the Runtime's namespace on ctx; every containerd call goes
// through it, so nothing outside the namespace is ever touched.
func (r *Runtime) ns(ctx context.Context) context.Context {
	return log.WithLogger(namespaces.WithNamespace(ctx, r.cfg.Namespace), r.clog)
}

// containerdLogger sends the containerd client's own logs (logrus, to
// stderr by default) to our logger: its routine notes ("fetch failed after
// status: 404", which Pull turns into an error anyway) at debug level, its
// warnings and errors as such.
func containerdLogger(l *slog.Logger) *log.Entry {
	lg := logrus.New()
	lg.SetOutput(io.Discard)
	lg.SetLevel(logrus.InfoLevel)
	lg.AddHook(logrusslog.NewHook(l, &logrusslog.HookOptions{
		LevelMapper: func(lv logrus.Level) slog.Level {
			if lv >= logrus.InfoLevel {
				return slog.LevelDebug
			}
			return logrusslog.Level(lv).Level()
		},
	}))
	return logrus.NewEntry(lg)
}

// checkShim warns early when the configured shim is not installed, so a
// node without Kata says so once at start rather than only in every
// instance's failure. containerd resolves the shim on its own PATH, which
// may differ from ours: this is a hint, never a refusal.
func (r *Runtime) checkShim(ctx context.Context) {
	if bin := shimBinary(r.cfg.RuntimeHandler); bin != "" {
		if _, err := exec.LookPath(bin); err != nil {
			r.log.WarnContext(ctx, "runtime shim not found on PATH; instances will fail to start unless containerd finds it", "shim", bin)
		}
	}
}

// shimBinary maps a runtime name to the binary containerd starts for it:
// io.containerd.kata.v2 → containerd-shim-kata-v2.
func shimBinary(handler string) string {
	parts := strings.Split(handler, ".")
	if len(parts) < 4 || parts[0] != "io" || parts[1] != "containerd" {
		return ""
	}
	return "containerd-shim-" + strings.Join(parts[2:len(parts)-1], "-") + "-" + parts[len(parts)-1]
}
