//! Generated files must match their source: the CRD in `crds/` and in the
//! chart must be what `tessera crd` prints, and `manifests/install.yaml`
//! what the chart renders. Fix drift with `scripts/generate.sh`.

#[path = "common/chart.rs"]
mod chart;

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

#[test]
fn crd_files_match_the_rust_types() {
    let generated = tessera::api::crd_yaml().expect("the CRD serializes");
    for rel in [
        "crds/databaseclusters.tessera.dev.yaml",
        "charts/tessera/crds/databaseclusters.tessera.dev.yaml",
    ] {
        assert!(
            read(rel) == generated,
            "{rel} drifted from src/api: run `tessera crd > {rel}` (or scripts/generate.sh)"
        );
    }
}

#[test]
fn install_yaml_matches_the_chart() {
    let helm = chart::helm();
    let out = Command::new(root().join("scripts/render-install.sh"))
        .arg(&helm)
        .output()
        .expect("running scripts/render-install.sh");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout) == read("manifests/install.yaml"),
        "manifests/install.yaml drifted from charts/tessera: run scripts/generate.sh"
    );
}

#[test]
fn examples_parse_as_database_clusters() {
    let dir = root().join("manifests/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("manifests/examples exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable example");
        let v: serde_yaml::Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let dbc: tessera::api::DatabaseCluster = serde_yaml::from_value(v)
            .unwrap_or_else(|e| panic!("{} is not a DatabaseCluster: {e}", path.display()));
        let cluster = tessera::operator::validate::validate(
            &{
                let mut d = dbc;
                d.metadata.uid = Some("test".into());
                d.metadata.namespace.get_or_insert_with(|| "default".into());
                d
            },
            "tessera:test",
            &Default::default(),
        );
        assert!(cluster.is_ok(), "{}: {cluster:?}", path.display());
        n += 1;
    }
    assert!(n >= 3, "expected at least 3 examples, found {n}");
}

#[test]
fn the_chart_renders_the_operators_network_policy_and_secret_rbac() {
    let helm = chart::helm();
    let docs = chart::render(&helm, "ops", &[]).expect("renders");
    let np = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .expect("a NetworkPolicy by default");
    assert_eq!(np["metadata"]["namespace"], "ops");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "tessera-operator"
    );
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], 8080);
    assert!(np["spec"]["ingress"][0].get("from").is_none());
    let off = chart::render(&helm, "ops", &["networkPolicy.enabled=false"]).expect("renders");
    assert!(!off.iter().any(|d| d["kind"] == "NetworkPolicy"));
    // The operator may create and read Secrets and manage NetworkPolicies.
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("ClusterRole");
    let rules = role["rules"].as_array().expect("rules");
    let grants = |res: &str| {
        rules
            .iter()
            .filter(|r| {
                r["resources"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == res))
            })
            .flat_map(|r| r["verbs"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(String::from))
            .collect::<Vec<_>>()
    };
    // Updated only to renew the certificates the operator issued.
    assert_eq!(grants("secrets"), vec!["get", "create", "update"]);
    assert!(grants("networkpolicies").contains(&"create".to_string()));
}
