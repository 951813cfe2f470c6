//! The one writer of `DatabaseCluster` status. Every status change, from
//! the reconcile's phase and conditions to each step of an operation, goes
//! through [`write_status`], so the precondition rules live in one place
//! and no two writers race.

use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use super::context::{Context, Error};
use crate::api::{DatabaseCluster, DatabaseClusterStatus};

/// How a write guards against a concurrent writer (a stale leader, the
/// previous reconcile's write not seen yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Last writer wins: phase, conditions, backup and restore results.
    None,
    /// Fails with [`Error::Conflict`] (409) if the object changed since it
    /// was read: topology decisions must be made on the latest recorded
    /// topology.
    Version,
    /// As [`Precondition::Version`], but a change of metadata only
    /// (annotations, the health monitor's nudge) does not invalidate a
    /// decision made on the status: the write is retried (up to 3 times)
    /// at the new version. Each step of an operation writes this way, so a
    /// stale leader loses with 409.
    StatusUnchanged,
}

/// Writes `status` (a merge patch of the status subresource); returns the
/// object as stored.
pub async fn write_status(
    ctx: &Context,
    dbc: &DatabaseCluster,
    status: &DatabaseClusterStatus,
    pre: Precondition,
) -> Result<DatabaseCluster, Error> {
    let name = dbc.name_any();
    let api: Api<DatabaseCluster> =
        Api::namespaced(ctx.client.clone(), &dbc.namespace().unwrap_or_default());
    let mut version = match pre {
        Precondition::None => None,
        Precondition::Version | Precondition::StatusUnchanged => dbc.resource_version(),
    };
    let attempts = if pre == Precondition::StatusUnchanged {
        3
    } else {
        1
    };
    for attempt in 0..attempts {
        let body = patch_body(status, pre, version.as_deref());
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(o) => return Ok(o),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                if pre != Precondition::StatusUnchanged || attempt + 1 == attempts {
                    return Err(Error::Conflict(kube::Error::Api(s)));
                }
                let latest = api.get(&name).await?;
                if latest.status != dbc.status {
                    return Err(Error::Conflict(kube::Error::Api(s)));
                }
                tracing::debug!(cluster = %name, attempt, "metadata changed underneath; retrying the status write");
                version = latest.resource_version();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Other("status write retries exhausted".into()))
}

/// The merge patch: the whole status, and the version it was decided on
/// unless last writer wins.
fn patch_body(
    status: &DatabaseClusterStatus,
    pre: Precondition,
    version: Option<&str>,
) -> serde_json::Value {
    let mut body = json!({ "status": status });
    if pre != Precondition::None {
        body["metadata"] = json!({ "resourceVersion": version });
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_precondition_is_the_version_the_status_was_read_at() {
        let st = DatabaseClusterStatus {
            epoch: 4,
            ..Default::default()
        };
        let free = patch_body(&st, Precondition::None, Some("17"));
        assert!(free.get("metadata").is_none());
        assert_eq!(free["status"]["epoch"], 4);
        for pre in [Precondition::Version, Precondition::StatusUnchanged] {
            let b = patch_body(&st, pre, Some("17"));
            assert_eq!(b["metadata"]["resourceVersion"], "17");
            assert_eq!(b["status"], free["status"]);
        }
    }
}
