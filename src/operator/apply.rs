//! Server-side apply with one field manager, and deletes that tolerate
//! absence. Everything the operator owns goes through here.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The operator's only field manager.
pub const MANAGER: &str = "tessera-operator";

pub fn params() -> PatchParams {
    // `force`: the operator owns these fields; a conflicting manager (say, a
    // hand edit with kubectl) is overruled rather than left half-applied.
    PatchParams::apply(MANAGER).force()
}

/// Applies `obj` (built by `build`), returning what the apiserver stored.
pub async fn apply<K>(client: &Client, namespace: &str, obj: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(&name, &params(), &Patch::Apply(obj)).await
}

/// Deletes `name` if it exists; `Ok(true)` when something was deleted.
pub async fn delete_if_exists<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<bool, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}
