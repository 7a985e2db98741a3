package cli

import (
	"testing"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// TestDevRolesParseLikeProduction: dev's roles take the same defaults as
// production's, except what dev decides (loopback listeners, no TLS, dev
// names), and the caller's variables win over dev's defaults.
func TestDevRolesParseLikeProduction(t *testing.T) {
	vars := devVars(map[string]string{"DEV_PORT_BASE": "30100", "DEV_NODES": "0", "QUEUE_WORKERS": "3"})
	vars["CLUSTER_TOKEN"] = "t"
	cfg, err := config.ParseFrom[config.Dev](vars)
	if err != nil {
		t.Fatal(err)
	}
	roles, err := devRoles(cfg, vars)
	if err != nil {
		t.Fatal(err)
	}
	prod, err := config.ParseFrom[config.Operator](map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "QUEUE_WORKERS": "3"})
	if err != nil {
		t.Fatal(err)
	}
	o, e, b := roles.operator, roles.edge, roles.builder
	if o.Queue != prod.Queue || o.RetireGrace != prod.RetireGrace || o.CustomDomains != prod.CustomDomains {
		t.Errorf("dev operator %+v, production %+v", o, prod)
	}
	if o.Addr != "127.0.0.1:30081" || e.HTTPAddr != "127.0.0.1:30082" || e.MetricsAddr != "127.0.0.1:30083" || e.TLS() {
		t.Errorf("operator on %s, edge on %s (metrics %s, TLS %v)", o.Addr, e.HTTPAddr, e.MetricsAddr, e.TLS())
	}
	if a := roles.api; a.Addr != "127.0.0.1:30080" || !a.Dev || a.GitHub.ClientID != "" {
		t.Errorf("api on %s, dev %v, GitHub %+v", a.Addr, a.Dev, a.GitHub)
	}
	if e.Platform.AppsDomain != "zeitwork.localhost" || o.Platform.EdgeHost != "edge.zeitwork.localhost" ||
		roles.api.Platform.AppsURL != "http://zeitwork.localhost:30082" {
		t.Errorf("dev platform %+v", o.Platform)
	}
	if !b.Registry.Insecure || b.Registry.Addr != cfg.Registry.Addr || b.Log.Format != zlog.FormatText {
		t.Errorf("dev builder registry %+v, log %+v", b.Registry, b.Log)
	}

	vars = devVars(map[string]string{"EDGE_APPS_DOMAIN": "apps.test", "LOG_FORMAT": "json"})
	vars["CLUSTER_TOKEN"] = "t"
	roles, err = devRoles(cfg, vars)
	if err != nil {
		t.Fatal(err)
	}
	if roles.operator.Platform.EdgeHost != "edge.apps.test" || roles.edge.Log.Format != zlog.FormatJSON ||
		roles.api.Platform.AppsURL != "http://apps.test:30082" {
		t.Errorf("caller's variables: edge host %s, log %+v, apps URL %s", roles.operator.Platform.EdgeHost, roles.edge.Log, roles.api.Platform.AppsURL)
	}
}
