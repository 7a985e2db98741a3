package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/upload"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

func bucketKeys(t *testing.T, mc *minio.Client, bucket string) []string {
	t.Helper()
	var keys []string
	for o := range mc.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// The api role's pruner deletes the uploads past their keep, nothing else
// in the bucket, and returns when its context ends.
func TestPruneUploads(t *testing.T) {
	mc, s3 := testenv.Bucket(t, "cli")
	store, err := uploadStore(s3, config.Uploads{MaxBytes: 1 << 10, Expiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(t.Context(), id.New(), id.New(), strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.PutObject(t.Context(), s3.Bucket, "registry/blob", strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A keep below zero puts the cutoff ahead of MinIO's clock: every
		// upload there is past it.
		pruneUploads(ctx, store, time.Hour, -time.Hour, zlog.Discard())
	}()
	deadline := time.Now().Add(30 * time.Second)
	for len(bucketKeys(t, mc, s3.Bucket)) != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	<-done
	if got := bucketKeys(t, mc, s3.Bucket); !slices.Equal(got, []string{"registry/blob"}) {
		t.Fatalf("left after pruning: %v, want [registry/blob]", got)
	}
}

// Presigned uploads are signed for the URL clients reach S3 at; "off"
// makes clients stream through the API.
func TestUploadStoreSignsForTheClientsURL(t *testing.T) {
	s3 := config.S3{Endpoint: "http://minio.internal:9000", Region: "us-east-1", Bucket: "zeitwork", AccessKeyID: "k", SecretAccessKey: "s"}
	for _, tc := range []struct{ s3URL, want string }{
		{"", "http://minio.internal:9000/zeitwork/"},
		{"https://s3.example.com", "https://s3.example.com/zeitwork/"},
		{"off", ""},
	} {
		store, err := uploadStore(s3, config.Uploads{S3URL: tc.s3URL, MaxBytes: 1 << 10, Expiry: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if store.Direct() != (tc.want != "") {
			t.Fatalf("UPLOAD_S3_URL=%q: direct = %v", tc.s3URL, store.Direct())
		}
		if tc.want == "" {
			continue
		}
		// Signing asks S3 nothing (the region is known): no MinIO here.
		p, err := store.Presign(context.Background(), id.New())
		if err != nil {
			t.Fatalf("UPLOAD_S3_URL=%q: %v", tc.s3URL, err)
		}
		if p.URL != tc.want {
			t.Errorf("UPLOAD_S3_URL=%q: url %s, want %s", tc.s3URL, p.URL, tc.want)
		}
	}
}

// The api role serves uploads when S3 is configured: over real HTTP, an
// archive streams through it into the bucket, and one over the limit is a
// 413 that closes the connection and stores nothing.
func TestAPIRoleServesUploads(t *testing.T) {
	mc, s3 := testenv.Bucket(t, "cli")
	dbURL := testdb.NewURL(t)
	pool, err := pgxpool.New(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	accounts := account.Store{DB: pool}
	u, _, err := accounts.SignIn(t.Context(), account.Profile{GitHubUserID: 1, Login: "alice", Email: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !u.Admitted {
		if err := accounts.Admit(t.Context(), u.ID); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := accounts.CreateToken(t.Context(), u.ID, "test")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var stderr testenv.Buffer
	exited := make(chan int, 1)
	go func() {
		exited <- Main(ctx, []string{"api"}, Env{Stdout: io.Discard, Stderr: &stderr, Environ: []string{
			"DATABASE_URL=" + dbURL, "CLUSTER_TOKEN=t", "API_ADDR=127.0.0.1:0", "LOG_FORMAT=text",
			"S3_ENDPOINT=" + s3.Endpoint, "S3_REGION=" + s3.Region, "S3_BUCKET=" + s3.Bucket,
			"S3_ACCESS_KEY_ID=" + s3.AccessKeyID, "S3_SECRET_ACCESS_KEY=" + s3.SecretAccessKey.Reveal(),
			"UPLOAD_S3_URL=off", "UPLOAD_MAX_BYTES=1024",
		}})
	}()
	defer func() {
		cancel()
		if code := <-exited; code != ExitOK {
			t.Errorf("api exited %d: %s", code, stderr.String())
		}
	}()
	addrRe := regexp.MustCompile(`msg="api running".* addr=(\S+)`)
	var base string
	for deadline := time.Now().Add(30 * time.Second); base == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := addrRe.FindStringSubmatch(stderr.String()); m != nil {
			base = "http://" + m[1]
		}
	}
	if base == "" {
		t.Fatalf("api did not start: %s", stderr.String())
	}

	call := func(method, path string, body io.Reader, size int64, out any) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = size
		req.Header.Set("Authorization", "Bearer "+tok.Secret)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if out != nil && resp.StatusCode/100 == 2 {
			if err := json.Unmarshal(raw, out); err != nil {
				t.Fatalf("%s %s: %v: %s", method, path, err, raw)
			}
		}
		return resp
	}
	var project struct {
		ID string `json:"id"`
	}
	body := `{"name":"app"}`
	if resp := call("POST", "/v1/projects", strings.NewReader(body), int64(len(body)), &project); resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/projects: %d", resp.StatusCode)
	}
	var up struct {
		Key, Method, URL string
	}
	if resp := call("POST", "/v1/projects/"+project.ID+"/uploads", nil, 0, &up); resp.StatusCode != http.StatusCreated || up.Method != "PUT" {
		t.Fatalf("POST uploads: %d %+v", resp.StatusCode, up)
	}
	if _, err := url.Parse(up.URL); err != nil || !strings.HasPrefix(up.URL, "/v1/projects/"+project.ID+"/uploads/") {
		t.Fatalf("upload url %q", up.URL)
	}

	// Chunked, so that only reading the stream finds it too large.
	resp := call("PUT", up.URL, io.MultiReader(bytes.NewReader(make([]byte, 4096))), -1, nil)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
		t.Fatalf("over the limit: %d, connection closed: %v", resp.StatusCode, resp.Close)
	}
	if keys := bucketKeys(t, mc, s3.Bucket); len(keys) != 0 {
		t.Fatalf("a refused upload left %v", keys)
	}
	var stored upload.Object
	if resp := call("PUT", up.URL, strings.NewReader("archive"), 7, &stored); resp.StatusCode != http.StatusCreated || stored.Key != up.Key {
		t.Fatalf("PUT: %d %+v, want %s", resp.StatusCode, stored, up.Key)
	}
	if keys := bucketKeys(t, mc, s3.Bucket); !slices.Equal(keys, []string{up.Key}) {
		t.Fatalf("bucket holds %v, want [%s]", keys, up.Key)
	}
}
