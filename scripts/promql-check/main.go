// Command promql-check parses Tessera's alerting rules and Grafana dashboard
// with Prometheus' own parser (github.com/prometheus/prometheus), the way
// Prometheus and promtool do, and prints every metric name they read, one
// per line, sorted. tests/monitoring.rs checks those names against what a
// running node and the operator export.
//
//	promql-check RULES.yaml DASHBOARD.json
//
// Exit status 1 and a message per problem when a rule or a panel's query
// does not parse.
package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Grafana replaces these before the query reaches Prometheus.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "1m",
	"$__range", "1h",
	"$namespace", "ns",
	"$cluster", "c",
)

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: promql-check RULES.yaml DASHBOARD.json")
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	names := map[string]bool{}
	failed := false
	collect := func(where, expr string) {
		e, err := p.ParseExpr(expr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %q: %v\n", where, expr, err)
			failed = true
			return
		}
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok && vs.Name != "" {
				names[vs.Name] = true
			}
			return nil
		})
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	groups, errs := rulefmt.ParseFile(os.Args[1], false, model.UTF8Validation, p, logger)
	for _, err := range errs {
		fmt.Fprintln(os.Stderr, err)
		failed = true
	}
	rules := 0
	if groups != nil {
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				rules++
				collect(fmt.Sprintf("%s: rule %s%s", os.Args[1], r.Alert, r.Record), r.Expr)
			}
		}
	}
	if rules == 0 {
		fmt.Fprintf(os.Stderr, "%s: no rules\n", os.Args[1])
		failed = true
	}

	raw, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var dash struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[2], err)
		os.Exit(1)
	}
	queries := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, pn := range ps {
			for _, t := range pn.Targets {
				queries++
				collect(fmt.Sprintf("%s: panel %q", os.Args[2], pn.Title), grafanaVars.Replace(t.Expr))
			}
			walk(pn.Panels)
		}
	}
	walk(dash.Panels)
	if queries == 0 {
		fmt.Fprintf(os.Stderr, "%s: no queries\n", os.Args[2])
		failed = true
	}
	if failed {
		os.Exit(1)
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	for _, n := range out {
		fmt.Println(n)
	}
}
