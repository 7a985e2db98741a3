package backup_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/zeitwork/zeitwork/internal/backup"
	"github.com/zeitwork/zeitwork/internal/cli"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/migration"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
	"github.com/zeitwork/zeitwork/packages/database"
)

// TestRestoreToAPointInTime: a cluster archives into the bucket; after a
// full backup more rows arrive, then more again after a moment T. A
// restore to T into a fresh data directory, started as a new cluster,
// holds every project, deployment and encrypted variable written up to T
// (the variables still open with the key ring) and nothing written after.
func TestRestoreToAPointInTime(t *testing.T) {
	for _, bin := range []string{"pgbackrest", "initdb", "pg_ctl", "runuser"} {
		if _, err := exec.LookPath(bin); err != nil {
			testenv.Unavailable(t, bin+" (scripts/deps.sh install)", err)
		}
	}
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "root (the clusters belong to the postgres user)", fmt.Errorf("uid %d", os.Geteuid()))
	}
	ctx := context.Background()
	dir := sharedTempDir(t)
	s3 := startTLSMinIO(t, dir)

	cfg := backup.Config{
		Stanza: "zeitwork", User: "zeitwork",
		Endpoint: s3.endpoint, Region: "us-east-1", Bucket: s3.bucket, Path: "/pgbackrest",
		AccessKey: s3.key, SecretKey: config.Secret(s3.secret), CAFile: s3.caFile,
		CipherPass: config.Secret("chaos-cipher-" + id.New().String()), RetentionFull: 2,
		WorkDir: filepath.Join(dir, "backup"), RunAs: "postgres", Binary: "pgbackrest",
	}
	pg := newCluster(t, dir, "main")
	cfg.DataDir, cfg.Port, cfg.SocketDir = pg.data, pg.port, dir
	pg.start(fmt.Sprintf("wal_level = replica\narchive_mode = on\narchive_command = '%s'\n", cfg.ArchiveCommand()))
	pg.exec(t, "postgres", `CREATE DATABASE zeitwork`)
	ms, err := migration.Load(database.Migrations())
	if err != nil {
		t.Fatal(err)
	}
	conn := pg.connect(t, "zeitwork")
	if _, err := migration.Apply(ctx, conn, ms, zlog.Discard()); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	ring, err := secret.ParseRing(secret.NewKey("backup1"))
	if err != nil {
		t.Fatal(err)
	}

	// The operator's commands, on the same settings as variables.
	vars := []string{
		"BACKUP_STANZA=" + cfg.Stanza, "BACKUP_PG_DATA=" + cfg.DataDir, fmt.Sprintf("BACKUP_PG_PORT=%d", cfg.Port),
		"BACKUP_PG_SOCKET_DIR=" + cfg.SocketDir, "BACKUP_PG_USER=" + cfg.User, "BACKUP_S3_ENDPOINT=" + cfg.Endpoint,
		"BACKUP_S3_BUCKET=" + cfg.Bucket, "BACKUP_S3_ACCESS_KEY_ID=" + cfg.AccessKey, "BACKUP_S3_SECRET_ACCESS_KEY=" + cfg.SecretKey.Reveal(),
		"BACKUP_S3_CA_FILE=" + cfg.CAFile, "BACKUP_CIPHER_PASS=" + cfg.CipherPass.Reveal(), "BACKUP_WORK_DIR=" + cfg.WorkDir,
	}
	zeitwork := func(args ...string) {
		t.Helper()
		var out, errOut strings.Builder
		if code := cli.Main(ctx, args, cli.Env{Environ: vars, Stdout: &out, Stderr: &errOut}); code != cli.ExitOK {
			t.Fatalf("zeitwork %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
		}
		t.Logf("zeitwork %s: %s", strings.Join(args, " "), strings.TrimSpace(out.String()))
	}

	before := writeProject(t, conn, ring, "before")
	start := time.Now()
	zeitwork("backup", "--type", "full")
	t.Logf("full backup into the TLS bucket: %s", time.Since(start).Round(time.Millisecond))
	if err := cfg.Backup(ctx, "weekly"); err == nil {
		t.Fatal("a backup of type weekly was taken")
	}
	list, err := cfg.List(ctx)
	if err != nil || len(list) != 1 || list[0].Type != backup.Full {
		t.Fatalf("backups %+v, %v; want one full", list, err)
	}

	// pgBackRest keeps a backup's stop time in whole seconds and restores
	// to a time only from a backup that stopped before it.
	time.Sleep(1100 * time.Millisecond)
	during := writeProject(t, conn, ring, "during") // only in the WAL
	var target time.Time
	if err := conn.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&target); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the restore's target is a time: keep the two sides apart
	after := writeProject(t, conn, ring, "after")
	// Close the segment holding all three, so it is archived.
	if _, err := conn.Exec(ctx, `SELECT pg_switch_wal()`); err != nil {
		t.Fatal(err)
	}
	waitArchived(t, conn)
	conn.Close(ctx)

	restored := newCluster(t, dir, "restored")
	start = time.Now()
	zeitwork("restore", "--to", restored.data, "--time", target.Format(time.RFC3339Nano))
	if err := cfg.Restore(ctx, restored.data, target); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("a restore over a restored directory: %v", err)
	}
	// Its own port and socket; no archiving of its own into the same stanza.
	restored.start("archive_mode = off\n")
	rconn := restored.connect(t, "zeitwork")
	restored.waitPromoted(t, rconn)
	t.Logf("restore to a point in time, started and promoted: %s", time.Since(start).Round(time.Millisecond))

	for _, p := range []written{before, during} {
		p.check(t, rconn, ring)
	}
	var n int
	rconn.QueryRow(ctx, `SELECT count(*) FROM projects WHERE id = $1`, after.project).Scan(&n)
	if n != 0 {
		t.Fatal("the restore holds a project written after its target time")
	}
}

// written is what writeProject wrote.
type written struct {
	project, deployment uuid.UUID
	name, value         string
}

// writeProject writes an organisation, a project, a deployment and an
// encrypted variable, in one transaction.
func writeProject(t *testing.T, conn *pgx.Conn, ring *secret.Ring, tag string) written {
	t.Helper()
	ctx := context.Background()
	w := written{project: id.New(), deployment: id.New(), name: "TOKEN_" + strings.ToUpper(tag), value: "value of " + tag + " " + id.New().String()}
	org := id.New()
	slug := tag + strings.ReplaceAll(w.project.String()[24:], "-", "")
	ct, kid := ring.Seal([]byte(w.value), secret.EnvContext(w.project, w.name))
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO organisations (id, slug, name) VALUES ($1, $2, 'Org')`, []any{org, slug}},
		{`INSERT INTO projects (id, organisation_id, slug, name) VALUES ($1, $2, $3, 'App')`, []any{w.project, org, slug}},
		{`INSERT INTO deployments (id, project_id, source_type, source_archive_key) VALUES ($1, $2, 'upload', 'uploads/x.tar.gz')`, []any{w.deployment, w.project}},
		{`INSERT INTO environment_variables (id, project_id, name, value_ciphertext, key_id) VALUES ($1, $2, $3, $4, $5)`, []any{id.New(), w.project, w.name, ct, kid}},
	} {
		if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w written) check(t *testing.T, conn *pgx.Conn, ring *secret.Ring) {
	t.Helper()
	ctx := context.Background()
	var deployments int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM deployments d JOIN projects p ON p.id = d.project_id WHERE d.id = $1 AND p.id = $2`, w.deployment, w.project).Scan(&deployments); err != nil || deployments != 1 {
		t.Fatalf("project %s with its deployment: %d rows, %v", w.project, deployments, err)
	}
	var ct []byte
	var kid string
	if err := conn.QueryRow(ctx, `SELECT value_ciphertext, key_id FROM environment_variables WHERE project_id = $1 AND name = $2`, w.project, w.name).Scan(&ct, &kid); err != nil {
		t.Fatalf("variable %s of %s: %v", w.name, w.project, err)
	}
	plain, err := ring.Open(ct, kid, secret.EnvContext(w.project, w.name))
	if err != nil || string(plain) != w.value {
		t.Fatalf("variable %s decrypts to %q, %v; want %q", w.name, plain, err, w.value)
	}
}

// waitArchived waits until Postgres reports no segment waiting for the
// archiver and no failure.
func waitArchived(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	var want string
	conn.QueryRow(context.Background(), `SELECT pg_walfile_name(pg_current_wal_lsn())`).Scan(&want)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var last *string
		var failed int64
		conn.QueryRow(context.Background(), `SELECT last_archived_wal, failed_count FROM pg_stat_archiver`).Scan(&last, &failed)
		if last != nil && *last >= prevSegment(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAL not archived: last %v, %d failures", last, failed)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// prevSegment is the name of the WAL segment before name (the current one
// is not finished, the one switched away from is).
func prevSegment(name string) string {
	var tl, log, seg uint64
	fmt.Sscanf(name, "%08X%08X%08X", &tl, &log, &seg)
	if seg == 0 {
		log, seg = log-1, 0xFF
	} else {
		seg--
	}
	return fmt.Sprintf("%08X%08X%08X", tl, log, seg)
}

// sharedTempDir is a directory the postgres user can use: t.TempDir's
// parents are root's alone.
func sharedTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "zwbackup-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	if out, err := exec.Command("chown", "postgres:", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v: %s", dir, err, out)
	}
	return dir
}

// cluster is a Postgres cluster of the test's own, owned by postgres.
type cluster struct {
	t    *testing.T
	dir  string
	data string
	port int
}

func newCluster(t *testing.T, dir, name string) *cluster {
	return &cluster{t: t, dir: dir, data: filepath.Join(dir, name), port: testenv.ReservedPort(t)}
}

func (c *cluster) run(args ...string) {
	c.t.Helper()
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
	cmd.Dir = c.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(c.data + ".log")
		c.t.Fatalf("%s: %v\n%s\n%s", strings.Join(args, " "), err, out, log)
	}
}

// start initialises the cluster unless its directory holds one (a
// restore), adds conf, and starts it.
func (c *cluster) start(conf string) {
	c.t.Helper()
	if _, err := os.Stat(filepath.Join(c.data, "PG_VERSION")); err != nil {
		c.run("initdb", "-D", c.data, "-A", "trust", "-U", "zeitwork", "--no-sync")
	}
	// Appended: a restore's recovery settings are in the file already.
	conf = fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n", c.port, c.dir) + conf
	f, err := os.OpenFile(filepath.Join(c.data, "postgresql.auto.conf"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	exec.Command("chown", "postgres:", filepath.Join(c.data, "postgresql.auto.conf")).Run()
	c.run("pg_ctl", "-D", c.data, "-l", c.data+".log", "-w", "-t", "120", "start")
	c.t.Cleanup(func() {
		exec.Command("runuser", "-u", "postgres", "--", "pg_ctl", "-D", c.data, "-m", "immediate", "-w", "stop").Run()
	})
}

func (c *cluster) url(db string) string {
	return fmt.Sprintf("postgres://zeitwork@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

func (c *cluster) connect(t *testing.T, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), c.url(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func (c *cluster) exec(t *testing.T, db, sql string) {
	t.Helper()
	conn := c.connect(t, db)
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatal(err)
	}
}

// waitPromoted waits for recovery to reach its target and promote.
func (c *cluster) waitPromoted(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var inRecovery bool
		if err := conn.QueryRow(context.Background(), `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err == nil && !inRecovery {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(c.data + ".log")
			t.Fatalf("the restored cluster is still recovering\n%s", log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tlsMinIO is a MinIO of the test's own serving HTTPS with a self-signed
// certificate: pgBackRest's S3 client speaks nothing else.
type tlsMinIO struct {
	endpoint, bucket, key, secret, caFile string
}

func startTLSMinIO(t *testing.T, dir string) tlsMinIO {
	t.Helper()
	bin := testenv.Binary(t, "minio")
	certs := filepath.Join(dir, "minio-certs")
	os.MkdirAll(certs, 0o755)
	certPEM, keyPEM := selfSigned(t)
	os.WriteFile(filepath.Join(certs, "public.crt"), certPEM, 0o644)
	os.WriteFile(filepath.Join(certs, "private.key"), keyPEM, 0o600)
	addr := testenv.ReservedAddr(t)
	m := tlsMinIO{endpoint: "https://" + addr, bucket: "backups", key: "backupkey", secret: "backupsecret-" + id.New().String()[:8], caFile: filepath.Join(certs, "public.crt")}
	cmd := exec.Command(bin, "server", filepath.Join(dir, "minio-data"), "--address", addr, "--console-address", testenv.ReservedAddr(t), "--certs-dir", certs, "--quiet")
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.key, "MINIO_ROOT_PASSWORD="+m.secret)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := (&http.Client{Transport: tr, Timeout: 2 * time.Second}).Get(m.endpoint + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the test's MinIO does not serve: %v\n%s", err, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	mc, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(m.key, m.secret, ""), Secure: true, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.MakeBucket(context.Background(), m.bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	return m
}

// selfSigned returns a certificate for 127.0.0.1 and its key, in PEM.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// pgBackRest checks the host against the names; Go against the IPs.
		DNSNames:              []string{"127.0.0.1", "localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}
