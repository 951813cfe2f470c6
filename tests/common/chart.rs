//! The Helm chart from tests: finding a helm binary and rendering
//! charts/tessera.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The helm binary `scripts/find-helm.sh` finds, or None (the caller skips,
/// saying why). With TESSERA_REQUIRE_HELM set — the e2e run, after the
/// cluster built helm — a missing helm panics instead.
pub fn helm() -> Option<String> {
    match Command::new(root().join("scripts/find-helm.sh")).output() {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        _ => {
            if std::env::var_os("TESSERA_REQUIRE_HELM").is_some() {
                panic!("helm is required (TESSERA_REQUIRE_HELM) but was not found");
            }
            None
        }
    }
}

/// `helm template t charts/tessera --namespace NS --set S...`, every
/// rendered document as JSON.
pub fn render(helm: &str, namespace: &str, sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "t", "charts/tessera", "--namespace", namespace])
        .current_dir(root());
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().map_err(|e| format!("helm template: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "helm template: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(
        serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
            .filter_map(|d| serde::Deserialize::deserialize(d).ok())
            .filter(|d: &Value| !d.is_null())
            .collect(),
    )
}
