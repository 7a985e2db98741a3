package bootstrap

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/ssh"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/migration"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/sshx"
	"github.com/zeitwork/zeitwork/packages/database"
)

// AppliedMarker records, on each node, the digest of the binary and files
// its units were last (re)started with: units are restarted when what they
// run changed, even if a run was killed between writing and restarting.
const AppliedMarker = "/var/lib/zeitwork/bootstrap/applied"

// Bootstrap is one run of `zeitwork bootstrap`.
type Bootstrap struct {
	Cluster *Cluster
	Env     map[string]string // the environment the *_env fields name
	Out     io.Writer
	DryRun  bool
	// Dial reaches a node; nil dials it over SSH with the cluster's key.
	Dial func(ctx context.Context, n Node) (Host, error)
	// Wait bounds the waits for registration and certificates; 0: 10m.
	Wait time.Duration
	// Poll is how often a wait checks again; 0: 2s.
	Poll time.Duration

	values   Values
	users    []roleUser // postgres.role_users, when set
	binary   []byte
	release  map[string][]byte // the other release files, by releaseFile.field
	signer   ssh.Signer
	pool     *pgxpool.Pool
	hosts    map[string]Host
	recorded Recorded
	ts       tailnetRun
}

// Run checks everything first, then brings the cluster to cluster.yaml's
// state step by step (or, in a dry run, prints what it would do).
func (b *Bootstrap) Run(ctx context.Context) (Result, error) {
	defer b.close()
	b.hosts = map[string]Host{}
	r := Runner{Out: b.Out, DryRun: b.DryRun}
	fmt.Fprintf(b.Out, "checks (%d nodes):\n", len(b.Cluster.Nodes))
	if err := r.Preflight(ctx, b.preflight()); err != nil {
		return Result{}, err
	}
	// First: the nodes' internal addresses may be their tailnet ones.
	tres, err := b.joinTailnet(ctx, r)
	if err != nil {
		return tres, err
	}
	rec, err := readRecorded(ctx, b.pool)
	if err != nil {
		return Result{}, err
	}
	b.recorded = rec
	b.printRecovery()
	fmt.Fprintln(b.Out, "steps:")
	res, err := r.Run(ctx, b.steps())
	res = res.plus(tres)
	if err != nil {
		return res, err
	}
	fmt.Fprintln(b.Out, res.Summary(b.DryRun))
	if !b.DryRun {
		b.printNext()
	}
	return res, nil
}

// printNext says what is left to a person once the cluster runs.
func (b *Bootstrap) printNext() {
	var edges []string
	for _, n := range b.Cluster.Nodes {
		if n.Has(RoleEdge) {
			edges = append(edges, hostOf(n.Address))
		}
	}
	p := b.Cluster.Platform
	fmt.Fprintf(b.Out, "next:\n  point %s and *.%s at the edges (%s)\n", p.EdgeHost, p.AppsDomain, strings.Join(edges, ", "))
	fmt.Fprintf(b.Out, "  run `zeitwork bootstrap --dry-run -f …` any time: it says whether anything drifted\n")
}

func (b *Bootstrap) close() {
	for _, h := range b.hosts {
		h.Close()
	}
	if b.pool != nil {
		b.pool.Close()
	}
}

// secretRefs are the environment variables cluster.yaml names, by field.
func (b *Bootstrap) secretRefs() [][2]string {
	c := b.Cluster
	refs := [][2]string{
		{"postgres.url_env", c.Postgres.URLEnv},
		{"cloudflare.api_token_env", c.Cloudflare.APITokenEnv},
		{"secrets.cluster_token_env", c.Secrets.ClusterTokenEnv},
		{"secrets.node_proxy_token_env", c.Secrets.NodeProxyTokenEnv},
		{"secrets.management_token_env", c.Secrets.ManagementTokenEnv},
		{"secrets.keys_env", c.Secrets.KeysEnv},
		{"secrets.certificate_keys_env", c.Secrets.CertificateKeysEnv},
	}
	if u := c.Postgres.RoleUsers; u != nil {
		refs = append(refs, [2]string{"postgres.role_users.password_key_env", u.PasswordKeyEnv})
	}
	if e := c.S3.Existing; e != nil {
		refs = append(refs, [2]string{"s3.existing.secret_access_key_env", e.SecretAccessKeyEnv})
	}
	if m := c.S3.MinIO; m != nil {
		refs = append(refs, [2]string{"s3.minio.root_user_env", m.RootUserEnv}, [2]string{"s3.minio.root_password_env", m.RootPassEnv})
	}
	if t := c.Tailscale; t != nil {
		refs = append(refs, [2]string{"tailscale.auth_key_env", t.AuthKeyEnv})
	}
	if c.Secrets.RegistryTokenKeyEnv != "" {
		refs = append(refs, [2]string{"secrets.registry_token_key_env", c.Secrets.RegistryTokenKeyEnv},
			[2]string{"secrets.registry_credential_secret_env", c.Secrets.RegistryCredentialSecretEnv})
	}
	return refs
}

func (b *Bootstrap) preflight() []Step {
	c := b.Cluster
	steps := []Step{
		{Name: "credentials", Check: b.checkCredentials},
		{Name: "release binary " + c.Path(c.Release.Binary), Check: func(context.Context) (Status, error) {
			raw, err := os.ReadFile(c.Path(c.Release.Binary))
			if err != nil {
				return Status{}, fmt.Errorf("release.binary: %w", err)
			}
			b.binary = raw
			return Status{Done: true, Detail: "sha256 " + digest(raw)[:16]}, nil
		}},
		{Name: "release files", Check: b.checkRelease},
		{Name: "ssh key " + c.Path(c.SSH.PrivateKey), Check: b.checkKey},
		{Name: "database", Check: b.checkDatabase},
		{Name: "secrets keys", Check: b.checkSecretKeys},
	}
	for _, n := range c.Nodes {
		steps = append(steps, Step{Name: n.Name + ": ssh " + c.SSH.User + "@" + n.Address, Check: func(ctx context.Context) (Status, error) {
			if b.signer == nil && b.Dial == nil {
				return Status{}, errors.New("no ssh key yet: the first real run generates it; then authorize its .pub on every machine")
			}
			h, err := b.dial(ctx, n)
			if err != nil {
				return Status{}, err
			}
			b.hosts[n.Name] = h
			return Status{Done: true, Detail: "reachable, host key pinned in " + c.Path(c.SSH.KnownHosts)}, nil
		}})
	}
	return steps
}

// kvmCheck: Kata runs every instance in a virtual machine, so a kata
// worker without KVM can run none. It is the node's first step, a check
// only: the run stops there, before anything on that node changes.
func (b *Bootstrap) kvmCheck(n Node, h Host) Step {
	i := slices.IndexFunc(b.Cluster.Nodes, func(m Node) bool { return m.Name == n.Name })
	return Step{Name: n.Name + ": " + KVMDevice + " (runtime kata)", Check: func(ctx context.Context) (Status, error) {
		ok, err := h.Exist(ctx, []string{KVMDevice})
		if err != nil {
			return Status{}, err
		}
		if !ok[0] {
			return Status{Detail: fmt.Sprintf("%s is missing: Kata Containers runs each instance in a virtual machine and needs KVM; "+
				"enable hardware virtualization (nested virtualization on a cloud VM) and load kvm_intel or kvm_amd, or set nodes[%d].runtime: runc", KVMDevice, i)}, nil
		}
		return Status{Done: true, Detail: "present"}, nil
	}}
}

func (b *Bootstrap) checkCredentials(context.Context) (Status, error) {
	var problems []string
	val := map[string]string{}
	for _, ref := range b.secretRefs() {
		v := b.Env[ref[1]]
		if v == "" {
			problems = append(problems, fmt.Sprintf("$%s (%s) is not set", ref[1], ref[0]))
		}
		val[ref[0]] = v
	}
	for field, name := range map[string]string{"secrets.keys_env": b.Cluster.Secrets.KeysEnv, "secrets.certificate_keys_env": b.Cluster.Secrets.CertificateKeysEnv} {
		if v := val[field]; v != "" {
			if _, err := secret.ParseRing(v); err != nil {
				problems = append(problems, fmt.Sprintf("$%s: %v", name, err))
			}
		}
	}
	if v := val["secrets.registry_token_key_env"]; v != "" {
		var k config.SigningKey
		if err := k.UnmarshalText([]byte(v)); err != nil {
			problems = append(problems, fmt.Sprintf("$%s: %v", b.Cluster.Secrets.RegistryTokenKeyEnv, err))
		}
	}
	if v := val["postgres.url_env"]; v != "" {
		if _, err := pgxpool.ParseConfig(v); err != nil {
			// pgx's errors may quote the URL, password and all.
			problems = append(problems, fmt.Sprintf("$%s is not a Postgres URL", b.Cluster.Postgres.URLEnv))
		}
	}
	if len(problems) > 0 {
		return Status{Detail: strings.Join(problems, "; ")}, nil
	}
	b.values = Values{
		DatabaseURL: val["postgres.url_env"], ClusterToken: val["secrets.cluster_token_env"],
		NodeProxyToken: val["secrets.node_proxy_token_env"], ManagementToken: val["secrets.management_token_env"],
		SecretsKeys: val["secrets.keys_env"], CertificateKeys: val["secrets.certificate_keys_env"], CloudflareToken: val["cloudflare.api_token_env"],
		S3SecretAccessKey: val["s3.existing.secret_access_key_env"],
		RegistryTokenKey:  val["secrets.registry_token_key_env"], RegistryCredentialSecret: val["secrets.registry_credential_secret_env"],
	}
	if u := b.Cluster.Postgres.RoleUsers; u != nil {
		users, err := roleUsers(*u, b.values.DatabaseURL, val["postgres.role_users.password_key_env"])
		if err != nil {
			return Status{}, err
		}
		b.users, b.values.DatabaseURLs = users, map[Role]string{}
		for _, ru := range users {
			b.values.DatabaseURLs[ru.role] = ru.url
		}
	}
	if b.Cluster.S3.MinIO != nil {
		b.values.S3AccessKeyID, b.values.S3SecretAccessKey = val["s3.minio.root_user_env"], val["s3.minio.root_password_env"]
	}
	return Status{Done: true, Detail: fmt.Sprintf("%d environment variables set", len(val))}, nil
}

func (b *Bootstrap) checkKey(context.Context) (Status, error) {
	if b.Dial != nil {
		return Status{Done: true, Detail: "not used: machines are reached another way"}, nil
	}
	p := b.Cluster.Path(b.Cluster.SSH.PrivateKey)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) && b.Cluster.SSH.Generate && b.DryRun {
		return Status{Done: true, Detail: "would be generated (Ed25519); its .pub must then be authorized on every machine"}, nil
	}
	s, made, err := sshx.LoadOrGenerateKey(p, b.Cluster.SSH.Generate)
	if err != nil {
		return Status{}, err
	}
	b.signer = s
	if made {
		return Status{Done: true, Detail: "generated; authorize " + p + ".pub on every machine"}, nil
	}
	return Status{Done: true, Detail: ssh.FingerprintSHA256(s.PublicKey())}, nil
}

func (b *Bootstrap) checkDatabase(ctx context.Context) (Status, error) {
	if b.values.DatabaseURL == "" {
		return Status{}, errors.New("no database URL (see credentials)")
	}
	pool, err := pgxpool.New(ctx, b.values.DatabaseURL)
	if err != nil {
		return Status{}, fmt.Errorf("$%s cannot be used", b.Cluster.Postgres.URLEnv)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return Status{}, fmt.Errorf("cannot reach the database: %w", err)
	}
	b.pool = pool
	var version string
	if err := pool.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		return Status{}, err
	}
	return Status{Done: true, Detail: "reachable, Postgres " + version}, nil
}

// checkSecretKeys: a recovered cluster must be able to decrypt what its
// database holds, so every key a stored value names must be in the ring.
func (b *Bootstrap) checkSecretKeys(ctx context.Context) (Status, error) {
	if b.pool == nil {
		return Status{}, errors.New("no database (see above)")
	}
	ring, err := secret.ParseRing(b.values.SecretsKeys)
	if err != nil {
		return Status{}, errors.New("no usable keys (see credentials)")
	}
	ids, err := db.New(b.pool).EnvironmentVariableKeyIDs(ctx)
	if errors.Is(notMigrated(err), errNotMigrated) {
		return Status{Done: true, Detail: "no encrypted values recorded yet; new ones use " + ring.Current()}, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("read secrets key ids: %w", err)
	}
	var lacking []string
	for _, id := range ids {
		if _, err := ring.Open(nil, id, ""); errors.Is(err, secret.ErrUnknownKey) {
			lacking = append(lacking, id)
		}
	}
	if len(lacking) > 0 {
		return Status{Detail: fmt.Sprintf("recorded values are encrypted under %s, which $%s lacks: add them to the ring or those values cannot be read",
			strings.Join(lacking, ", "), b.Cluster.Secrets.KeysEnv)}, nil
	}
	return Status{Done: true, Detail: fmt.Sprintf("the ring holds all %d recorded key ids; new values use %s", len(ids), ring.Current())}, nil
}

func (b *Bootstrap) dial(ctx context.Context, n Node) (Host, error) {
	if b.Dial != nil {
		return b.Dial(ctx, n)
	}
	c, err := sshx.Dial(ctx, n.Address, sshx.Config{User: b.Cluster.SSH.User, Signer: b.signer, KnownHosts: b.Cluster.Path(b.Cluster.SSH.KnownHosts)})
	if err != nil {
		return nil, err
	}
	return NewSSHHost(c, ""), nil
}

// printRecovery says which machines take over recorded identities, and
// which recorded nodes the file no longer lists (left as they are).
func (b *Bootstrap) printRecovery() {
	rec := b.recorded
	if len(rec.Pending) > 0 {
		fmt.Fprintf(b.Out, "database: %d migrations pending; no cluster recorded yet\n", len(rec.Pending))
		return
	}
	fmt.Fprintf(b.Out, "database: %d nodes, %d live operators, %d certificate files recorded\n", len(rec.Nodes), len(rec.Operators), len(rec.Certificates))
	for _, n := range b.Cluster.Nodes {
		if rn, ok := rec.nodeAt(n.AgentAddress()); ok && n.Has(RoleWorker) {
			fmt.Fprintf(b.Out, "  %s (%s) is recorded node %s, prefix %s, %s: it keeps them\n", n.Name, n.InternalAddress, rn.ID, rn.Prefix, rn.Status)
		}
	}
	for _, rn := range rec.Nodes {
		if !slices.ContainsFunc(b.Cluster.Nodes, func(n Node) bool { return n.AgentAddress() == rn.InternalAddress && n.Has(RoleWorker) }) {
			fmt.Fprintf(b.Out, "  recorded node %s (%s, %s) is not a worker in the file: left as it is\n", rn.ID, rn.InternalAddress, rn.Status)
		}
	}
}

// rolePriority orders the nodes: the control plane first, so that workers
// and edges find operators when they start.
func rolePriority(n Node) int {
	for i, r := range []Role{RoleOperator, RoleAPI, RoleWorker, RoleBuilder, RoleEdge} {
		if n.Has(r) {
			return i
		}
	}
	return 99
}

func (b *Bootstrap) steps() []Step {
	c := b.Cluster
	steps := []Step{{
		Name: "database: migrations",
		Check: func(ctx context.Context) (Status, error) {
			pending, err := pendingMigrations(ctx, b.pool)
			if err != nil {
				return Status{}, err
			}
			if len(pending) > 0 {
				return Status{Detail: fmt.Sprintf("%d to apply (%s)", len(pending), strings.Join(pending, ", "))}, nil
			}
			return Status{Done: true, Detail: "up to date"}, nil
		},
		Apply: func(ctx context.Context) error {
			ms, err := migration.Load(database.Migrations())
			if err != nil {
				return err
			}
			_, err = migration.Apply(ctx, b.pool, ms, discard)
			return err
		},
	}}
	if c.Postgres.RoleUsers != nil {
		// Before any node starts a role that connects as its user.
		steps = append(steps, b.roleUsersStep())
	}
	nodes := slices.Clone(c.Nodes)
	// The nodes holding the bucket and the registry first: the roles
	// started after them need both.
	infra := func(n Node) int {
		if (c.S3.MinIO != nil && c.S3.MinIO.Node == n.Name) || c.Registry.Node == n.Name {
			return -1
		}
		return rolePriority(n)
	}
	slices.SortStableFunc(nodes, func(x, y Node) int { return cmp.Compare(infra(x), infra(y)) })
	for _, n := range nodes {
		steps = append(steps, b.nodeSteps(n)...)
	}
	steps = append(steps, b.registrationStep(), b.certificateStep())
	return steps
}

// fileStep makes files exactly what they must be on a node.
func fileStep(name string, h Host, files []File) Step {
	return Step{
		Name: name,
		Check: func(ctx context.Context) (Status, error) {
			paths := make([]string, len(files))
			for i, f := range files {
				paths[i] = f.Path
			}
			have, err := h.SHA256s(ctx, paths)
			if err != nil {
				return Status{}, err
			}
			var differ []string
			for i, f := range files {
				if have[i] != digest(f.Data) {
					differ = append(differ, f.Path)
				}
			}
			if len(differ) > 0 {
				return Status{Detail: "to write: " + strings.Join(differ, ", ")}, nil
			}
			if len(files) == 1 {
				return Status{Done: true, Detail: "sha256 " + digest(files[0].Data)[:16]}, nil
			}
			return Status{Done: true, Detail: fmt.Sprintf("%d files as rendered", len(files))}, nil
		},
		Apply: func(ctx context.Context) error {
			for _, f := range files {
				if _, err := h.Install(ctx, f.Path, f.Data, f.Mode); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func (b *Bootstrap) nodeSteps(n Node) []Step {
	h := b.hosts[n.Name]
	pkgs := DistroOf(n.OS).Packages(n)
	var steps []Step
	if n.Has(RoleWorker) && n.Runtime == RuntimeKata {
		steps = append(steps, b.kvmCheck(n, h))
	}
	steps = append(steps, Step{
		Name: n.Name + ": packages",
		Check: func(ctx context.Context) (Status, error) {
			missing, err := h.Missing(ctx, pkgs)
			if err != nil {
				return Status{}, err
			}
			if len(missing) > 0 {
				return Status{Detail: "to install: " + strings.Join(missing, " ")}, nil
			}
			return Status{Done: true, Detail: strings.Join(pkgs, " ")}, nil
		},
		Apply: func(ctx context.Context) error {
			missing, err := h.Missing(ctx, pkgs)
			if err != nil {
				return err
			}
			return h.InstallPackages(ctx, missing)
		},
	})
	steps = append(steps, fileStep(n.Name+": zeitwork binary "+BinaryPath, h, []File{{Path: BinaryPath, Mode: 0o755, Data: b.binary}}))
	steps = append(steps, b.installSteps(n, h)...)
	if rn, ok := b.recorded.nodeAt(n.AgentAddress()); ok && n.Has(RoleWorker) {
		// Before the agent starts: it registers with the id it finds here.
		steps = append(steps, fileStep(fmt.Sprintf("%s: node identity %s (recorded, prefix %s)", n.Name, rn.ID, rn.Prefix), h,
			[]File{NodeIDState(rn.ID.String())}))
	}
	files, err := Render(b.Cluster, n, b.values)
	if err != nil {
		return append(steps, Step{Name: n.Name + ": configuration", Check: func(context.Context) (Status, error) { return Status{}, err }})
	}
	steps = append(steps, fileStep(fmt.Sprintf("%s: configuration (%d files)", n.Name, len(files)), h, files))
	steps = append(steps, b.daemonSteps(n, h, files)...)

	units := Units(n)
	marker := appliedMarker(b.binary, files)
	steps = append(steps, b.startStep(n, h, units, marker))
	return steps
}

// missingStep checks for what cluster.yaml does not say how to install:
// a machine prepared by hand passes.
func missingStep(name string, h Host, p, msg string) Step {
	return Step{
		Name: name,
		Check: func(ctx context.Context) (Status, error) {
			have, err := h.SHA256s(ctx, []string{p})
			if err != nil {
				return Status{}, err
			}
			if have[0] == "" {
				return Status{Detail: p + " is missing"}, nil
			}
			return Status{Done: true, Detail: p + " present"}, nil
		},
		Apply: func(context.Context) error { return missingError{msg} },
	}
}

// appliedMarker is what AppliedMarker holds once the units run binary and
// files.
func appliedMarker(binary []byte, files []File) []byte {
	var s strings.Builder
	fmt.Fprintf(&s, "%s %s\n", digest(binary), BinaryPath)
	for _, f := range files {
		fmt.Fprintf(&s, "%s %s\n", digest(f.Data), f.Path)
	}
	return []byte(s.String())
}

func (b *Bootstrap) registrationStep() Step {
	var workers []Node
	operators := 0
	for _, n := range b.Cluster.Nodes {
		if n.Has(RoleWorker) {
			workers = append(workers, n)
		}
		if n.Has(RoleOperator) {
			operators++
		}
	}
	check := func(ctx context.Context) (Status, error) {
		rec, err := readCluster(ctx, b.pool)
		if errors.Is(err, errNotMigrated) {
			return Status{Detail: err.Error()}, nil
		}
		if err != nil {
			return Status{}, err
		}
		var waiting []string
		for _, w := range workers {
			rn, ok := rec.nodeAt(w.AgentAddress())
			// Draining counts: a worker someone drained stays so.
			if !ok || rn.Status == node.StatusDead || time.Since(rn.LastHeartbeatAt) > operatorAlive {
				waiting = append(waiting, w.Name)
			}
		}
		if len(rec.Operators) < operators {
			waiting = append(waiting, fmt.Sprintf("%d of %d operators", operators-len(rec.Operators), operators))
		}
		if len(waiting) > 0 {
			return Status{Detail: "waiting for " + strings.Join(waiting, ", ")}, nil
		}
		return Status{Done: true, Detail: fmt.Sprintf("%d workers active, %d operators alive", len(workers), len(rec.Operators))}, nil
	}
	return Step{Name: "cluster: workers and operators registered", Check: check, Apply: b.waitFor(check)}
}

func (b *Bootstrap) certificateStep() Step {
	domains := b.Cluster.Platform.Domains
	directory := b.Cluster.Platform.acmeDirectory()
	check := func(ctx context.Context) (Status, error) {
		rec, err := readCluster(ctx, b.pool)
		if errors.Is(err, errNotMigrated) {
			return Status{Detail: err.Error()}, nil
		}
		if err != nil {
			return Status{}, err
		}
		missing := missingCertificates(directory, domains, rec.Certificates)
		if len(missing) > 0 {
			return Status{Detail: "the edges obtain them from " + directory + " by DNS-01 through Cloudflare; missing: " + strings.Join(missing, " ")}, nil
		}
		return Status{Done: true, Detail: fmt.Sprintf("%d names held in the database, from %s", 2*len(domains), directory)}, nil
	}
	return Step{Name: "certificates: " + strings.Join(domains, ", ") + " and their wildcards", Check: check, Apply: b.waitFor(check)}
}

// waitFor is the Apply of a step that other processes complete: it waits
// until the check passes.
func (b *Bootstrap) waitFor(check func(context.Context) (Status, error)) func(context.Context) error {
	return func(ctx context.Context) error {
		wait, poll := cmp.Or(b.Wait, 10*time.Minute), cmp.Or(b.Poll, 2*time.Second)
		ctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		for {
			st, err := check(ctx)
			if err == nil && st.Done {
				return nil
			}
			select {
			case <-ctx.Done():
				if err == nil {
					err = errors.New(st.Detail)
				}
				return fmt.Errorf("gave up after %v: %w", wait, err)
			case <-time.After(poll):
			}
		}
	}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
