package main

// Every alert in charts/tessera/files/alerts.yaml, evaluated by Prometheus'
// own engine (promql/promqltest storage) over series that should make it
// fire and series that should not. `for:` is honoured the way the rule
// manager does: the expression must hold at every evaluation (each minute)
// over the whole `for` window.

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
)

type alertCase struct {
	// promqltest `load 1m` series lines.
	fires, quiet []string
	// Evaluated at this offset from the first sample.
	at time.Duration
	// A label the firing alert must carry, e.g. `pod="n-0"` (empty: none).
	label string
}

var cases = map[string]alertCase{
	"TesseraNodeDown": {
		fires: []string{`up{tessera_component="node", pod="n-0"} 1 1 0 0 0 0 0`},
		quiet: []string{
			`up{tessera_component="node", pod="n-0"} 1 1 1 1 1 1 1`,
			`up{job="something-else", pod="x"} 0 0 0 0 0 0 0`,
			// Down for less than the 2 minutes.
			`up{tessera_component="node", pod="n-1"} 1 1 1 1 1 0 0`,
		},
		at: 6 * time.Minute, label: `pod="n-0"`,
	},
	"TesseraNodeNotReady": {
		fires: []string{`tessera_ready{pod="n-0"} 0x10`},
		quiet: []string{`tessera_ready{pod="n-0"} 0 0 0 1 1 1 1 1 1 1 1`},
		at:    10 * time.Minute, label: `pod="n-0"`,
	},
	"TesseraReplicaLinkDown": {
		fires: []string{`tessera_replication_link_up{pod="n-1"} 1 1 0 0 0 0`},
		quiet: []string{`tessera_replication_link_up{pod="n-1"} 1 1 1 1 1 0`},
		at:    5 * time.Minute, label: `pod="n-1"`,
	},
	"TesseraReplicaRefusedAhead": {
		fires: []string{`tessera_replication_refused_ahead{pod="n-2"} 0 1 1 1`},
		quiet: []string{`tessera_replication_refused_ahead{pod="n-2"} 0 0 0 0`},
		at:    3 * time.Minute, label: `pod="n-2"`,
	},
	"TesseraReplicaStale": {
		fires: []string{`tessera_replication_staleness_milliseconds{pod="n-1"} 40000x10`},
		quiet: []string{`tessera_replication_staleness_milliseconds{pod="n-1"} 1000x10`},
		at:    10 * time.Minute, label: `pod="n-1"`,
	},
	"TesseraWalFsyncSlow": {
		// 60 fsyncs a minute taking 6 s in all: 100 ms each.
		fires: []string{
			`tessera_wal_fsyncs_total{pod="n-0"} 0+60x30`,
			`tessera_wal_fsync_seconds_total{pod="n-0"} 0+6x30`,
		},
		// 1 ms each.
		quiet: []string{
			`tessera_wal_fsyncs_total{pod="n-0"} 0+60x30`,
			`tessera_wal_fsync_seconds_total{pod="n-0"} 0+0.06x30`,
		},
		at: 30 * time.Minute, label: `pod="n-0"`,
	},
	"TesseraBackupFailed": {
		fires: []string{`tessera_backups_total{cluster="c", result="failed"} 0 0 0 1 1 1`},
		quiet: []string{
			`tessera_backups_total{cluster="c", result="failed"} 0 0 0 0 0 0`,
			`tessera_backups_total{cluster="c", result="succeeded"} 0 1 2 3 4 5`,
		},
		at: 5 * time.Minute, label: `cluster="c"`,
	},
	"TesseraBackupTooOld": {
		// Evaluated 28 h in: the last success at 0 s (28 h ago) fires, one
		// at 25 h (3 h ago) does not.
		fires: []string{`tessera_backup_last_success_timestamp_seconds{cluster="c"} 0x1700`},
		quiet: []string{`tessera_backup_last_success_timestamp_seconds{cluster="c"} 90000x1700`},
		at:    28 * time.Hour, label: `cluster="c"`,
	},
	"TesseraOperatorNoLeader": {
		fires: []string{
			`tessera_operator_leader{pod="a"} 0x10`,
			`tessera_operator_leader{pod="b"} 0x10`,
		},
		quiet: []string{
			`tessera_operator_leader{pod="a"} 0x10`,
			`tessera_operator_leader{pod="b"} 1x10`,
		},
		at: 10 * time.Minute,
	},
	"TesseraReconcileErrors": {
		fires: []string{`tessera_operator_reconcile_errors_total{category="kube"} 0+1x40`},
		quiet: []string{`tessera_operator_reconcile_errors_total{category="kube"} 3x40`},
		at:    40 * time.Minute, label: `category="kube"`,
	},
}

func loadRules(t *testing.T) map[string]rulefmt.Rule {
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile("../../charts/tessera/files/alerts.yaml", false, model.UTF8Validation, p, slog.Default())
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	out := map[string]rulefmt.Rule{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out[r.Alert] = r
			}
		}
	}
	return out
}

// holds reports whether expr returns a sample at every minute of the `for`
// window ending at `at`, and the labels it returned at `at`.
func holds(t *testing.T, series []string, expr string, at, forDur time.Duration) (bool, string) {
	load := "load 1m\n"
	for _, s := range series {
		load += "  " + s + "\n"
	}
	st := promqltest.LoadedStorage(t, load)
	eng := promqltest.NewTestEngine(t, false, 5*time.Minute, 10_000_000)
	last := ""
	for off := at - forDur; off <= at; off += time.Minute {
		q, err := eng.NewInstantQuery(context.Background(), st, nil, expr, time.Unix(0, 0).Add(off))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		res := q.Exec(context.Background())
		if res.Err != nil {
			t.Fatalf("%s: %v", expr, res.Err)
		}
		v, ok := res.Value.(promql.Vector)
		if !ok {
			t.Fatalf("%s: not a vector: %v", expr, res.Value)
		}
		if len(v) == 0 {
			return false, ""
		}
		last = fmt.Sprint(v)
	}
	return true, last
}

func TestEveryAlertFiresOnItsCaseAndOnlyThen(t *testing.T) {
	rules := loadRules(t)
	for name := range rules {
		if _, ok := cases[name]; !ok {
			t.Errorf("alert %s has no case in alerts_test.go", name)
		}
	}
	for name, c := range cases {
		r, ok := rules[name]
		if !ok {
			t.Errorf("case %s: no such alert in alerts.yaml", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			forDur := time.Duration(r.For)
			fired, labels := holds(t, c.fires, r.Expr, c.at, forDur)
			if !fired {
				t.Errorf("does not fire on %v", c.fires)
			} else if c.label != "" && !strings.Contains(labels, c.label) {
				t.Errorf("fires without %s: %s", c.label, labels)
			}
			if quiet, got := holds(t, c.quiet, r.Expr, c.at, forDur); quiet {
				t.Errorf("fires on %v: %s", c.quiet, got)
			}
		})
	}
}

func TestNoLeaderFiresWithoutAnyOperatorSeries(t *testing.T) {
	r := loadRules(t)["TesseraOperatorNoLeader"]
	if fired, _ := holds(t, []string{`tessera_ready{pod="n-0"} 1x10`}, r.Expr, 10*time.Minute, time.Duration(r.For)); !fired {
		t.Error("does not fire when no operator is scraped at all")
	}
}
