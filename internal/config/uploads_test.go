package config

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// The API parses S3 only when S3_ENDPOINT is set: without it the API runs
// (uploads answer 503); with it, S3's variables are required and checked
// like any role's.
func TestAPIS3IsOptional(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://u:p@127.0.0.1:5432/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}

	cfg, err := ParseFrom[API](with("S3_BUCKET", "ignored"))
	if err != nil || cfg.S3 != nil {
		t.Fatalf("without S3_ENDPOINT: S3 = %+v, err = %v; want nil, nil", cfg.S3, err)
	}
	if u := cfg.Uploads; u.MaxBytes != 512<<20 || u.Expiry != 15*time.Minute || u.Keep != 24*time.Hour || !u.Direct() {
		t.Fatalf("upload defaults: %+v", u)
	}

	cfg, err = ParseFrom[API](with("S3_ENDPOINT", "http://minio:9000", "S3_BUCKET", "b", "S3_ACCESS_KEY_ID", "k", "S3_SECRET_ACCESS_KEY", "s",
		"UPLOAD_S3_URL", "off", "UPLOAD_MAX_BYTES", "1024"))
	if err != nil || cfg.S3 == nil || cfg.S3.Bucket != "b" || cfg.S3.Host() != "minio:9000" || cfg.S3.Region != "us-east-1" {
		t.Fatalf("with S3: %+v, %v", cfg.S3, err)
	}
	if cfg.Uploads.Direct() || cfg.Uploads.MaxBytes != 1024 {
		t.Fatalf("uploads: %+v", cfg.Uploads)
	}

	for _, tc := range []struct {
		env  map[string]string
		want []string
	}{
		{with("S3_ENDPOINT", "http://minio:9000"), []string{"S3_ACCESS_KEY_ID", "S3_BUCKET", "S3_SECRET_ACCESS_KEY"}},
		{with("S3_ENDPOINT", "minio:9000", "S3_BUCKET", "b", "S3_ACCESS_KEY_ID", "k", "S3_SECRET_ACCESS_KEY", "s"), []string{"S3_ENDPOINT"}},
		{with("UPLOAD_MAX_BYTES", "0", "UPLOAD_S3_URL", "minio:9000", "UPLOAD_EXPIRY", "200h", "UPLOAD_KEEP", "300h"), []string{"UPLOAD_EXPIRY", "UPLOAD_MAX_BYTES", "UPLOAD_S3_URL"}},
		{with("UPLOAD_EXPIRY", "1h", "UPLOAD_KEEP", "30m"), []string{"UPLOAD_KEEP"}},
		{with("UPLOAD_S3_URL", "https://cdn.example.com/s3"), []string{"UPLOAD_S3_URL"}},
	} {
		_, err := ParseFrom[API](tc.env)
		var cerr *Error
		if !errors.As(err, &cerr) || !slices.Equal(cerr.Vars(), tc.want) {
			t.Errorf("%v: err = %v, want problems with %v", tc.env, err, tc.want)
		}
	}
}
