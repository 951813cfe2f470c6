//! The Helm chart from tests: finding a helm binary and rendering
//! charts/tessera.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The helm binary `scripts/find-helm.sh` finds. None is a failure, not a
/// skip: `make deps` (run by `make test-unit`) builds helm before the tests.
pub fn helm() -> String {
    match Command::new(root().join("scripts/find-helm.sh")).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => panic!(
            "no helm binary: `make deps` builds one (e2e/build.sh helm), or set HELM=/path/to/helm"
        ),
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
