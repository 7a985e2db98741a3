package builder

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/detect"
	"github.com/zeitwork/zeitwork/internal/github"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/registryauth"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// DetectPlanner plans builds with internal/detect, base images taken from
// images (a registry mirror in production, local images in tests).
func DetectPlanner(images detect.BaseImages) Planner {
	return func(dir, dockerfilePath string) (detect.Plan, error) {
		root, err := os.OpenRoot(dir)
		if err != nil {
			return detect.Plan{}, err
		}
		defer root.Close()
		return detect.Detect(root.FS(), detect.Options{DockerfilePath: dockerfilePath, BaseImages: images})
	}
}

// Main runs `zeitwork builder` until ctx ends: it works build tasks, any
// number of replicas side by side. built, if not nil, runs in the
// transaction that records each successful build (the caller hands the
// deployment on to the operator there).
func Main(ctx context.Context, cfg config.Builder, pool *pgxpool.Pool, built func(ctx context.Context, tx pgx.Tx, d db.Deployment, img db.Image) error, log *slog.Logger) error {

	s3, err := minio.New(cfg.S3.Host(), &minio.Options{
		Creds: credentials.NewStaticV4(cfg.S3.AccessKeyID, cfg.S3.SecretAccessKey.Reveal(), ""), Secure: cfg.S3.Secure(), Region: cfg.S3.Region,
	})
	if err != nil {
		return fmt.Errorf("s3: %w", err)
	}
	var gh *github.Client
	if cfg.GitHub.AppID != 0 {
		gh, err = github.New(github.Config{BaseURL: cfg.GitHub.APIURL, AppID: cfg.GitHub.AppID, PrivateKey: []byte(cfg.GitHub.AppPrivateKey.Reveal())})
		if err != nil {
			return &config.Error{Problems: []config.Problem{{Var: "GITHUB_APP_PRIVATE_KEY", Reason: err.Error()}}}
		}
	}
	builderID := cfg.BuilderID
	if builderID == "" {
		host, _ := os.Hostname()
		builderID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	svc := &Service{
		Pool:     pool,
		BuildKit: BuildKit{Addr: cfg.Buildkit.Addr, AllowHostNetwork: cfg.BuildNetwork == "host"},
		Fetcher:  SourceFetcher{Queries: db.New(pool), GitHub: gh, S3: s3, Bucket: cfg.S3.Bucket},
		Plan:     DetectPlanner(detect.WithRegistry(strings.TrimSuffix(cfg.BaseImageMirror, "/"))),
		Log:      zlog.Component(log, "build"),
		Config: Config{
			BuilderID: builderID, Timeout: cfg.BuildTimeout, Lease: cfg.BuildLease, Logs: buildlog.DefaultLimits,
			// Not the builder's own username and password: builds get
			// per-project credentials or, for a registry without
			// authentication, none (config refuses a username without
			// REGISTRY_CREDENTIAL_SECRET).
			Registry: Registry{Host: cfg.Registry.Addr, Insecure: cfg.Registry.Insecure},
			Built:    built,
		},
	}
	if secret := cfg.RegistryAuth.CredentialSecret.Reveal(); secret != "" {
		minter := &registryauth.Service{Secret: []byte(secret)}
		svc.Config.Credentials = func(project uuid.UUID, ttl time.Duration) (string, string) {
			principal := registryauth.ProjectPrincipal(project)
			return principal, minter.Mint(principal, ttl)
		}
	} else if cfg.Registry.Username == "" {
		svc.Config.AnonymousRegistry = true
		log.WarnContext(ctx, "registry without authentication: builds push with no credentials (local development only)", "registry", cfg.Registry.Addr)
	}
	if cfg.BuildNetwork == "host" {
		log.WarnContext(ctx, "BUILD_NETWORK=host: builds may run on a buildkitd whose RUN steps share the host's network (local development only)")
	}
	workers := queue.NewWorkers(build.Queue)
	// Operators lead the queue; a builder leading would judge a dead
	// builder's build stuck only after the whole build timeout.
	workers.Follow()
	queue.Register(workers, &Worker{Service: svc})
	q, err := queue.New(pool, workers, cfg.Queue, log)
	if err != nil {
		return err
	}
	hc := &health{pool: pool, builderID: builderID}
	if cfg.HealthAddr != "" {
		if err := serveHealth(ctx, cfg.HealthAddr, hc, log); err != nil {
			return err
		}
	}
	if err := q.Start(ctx); err != nil {
		return fmt.Errorf("start queue: %w", err)
	}
	hc.working.Store(true)
	log.InfoContext(ctx, "builder working", "builder_id", builderID, "buildkit", cfg.Buildkit.Addr, "registry", cfg.Registry.Addr, "github", gh != nil)
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.BuildTimeout)
	defer cancel()
	return q.Stop(stopCtx)
}
