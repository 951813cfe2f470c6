//! The cluster's generated credentials (`build::secrets`): created when
//! missing, read back when present, never overwritten (a user may rotate
//! them by editing the Secret; docs/security.md).

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

use super::build::{
    build_auth_secret, build_internal_secret, build_tls_secret, build_user_secret,
    generated_auth_secret_name, generated_tls_secret_name, generated_user_secret_name,
    generates_auth_secret, internal_secret_name, SecretOwner, AUTH_PASSWORD_KEY,
    INTERNAL_TOKEN_KEY,
};
use super::context::{Context, Error};
use crate::api::DatabaseCluster;

/// Makes sure `<cluster>-internal`, `<cluster>-auth` (without
/// `spec.auth.secretName`) and `<cluster>-user-<name>` (users without a
/// `secretName`) exist, and records the cluster's admin token for the
/// operator's own calls to its nodes. Runs before the nodes are observed.
pub async fn ensure(ctx: &Context, dbc: &DatabaseCluster) -> Result<(), Error> {
    let ns = dbc.namespace().unwrap_or_default();
    let name = dbc.name_any();
    let owner = dbc
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Other("the DatabaseCluster has no uid yet".into()))?;
    let o = SecretOwner {
        namespace: &ns,
        cluster: &name,
        owner,
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let token = get_or_create(
        &api,
        &internal_secret_name(&name),
        INTERNAL_TOKEN_KEY,
        || build_internal_secret(&o, crate::client::auth::generate_token()),
    )
    .await?;
    crate::client::auth::set_cluster_token(&ns, &name, &token);
    if generates_auth_secret(&dbc.spec) {
        get_or_create(
            &api,
            &generated_auth_secret_name(&name),
            AUTH_PASSWORD_KEY,
            || build_auth_secret(&o, generate_password()),
        )
        .await?;
    }
    if dbc.spec.tls.enabled {
        let ca = match &dbc.spec.tls.secret_name {
            None => ensure_tls(&api, &o, dbc.spec.shards.max(1) as u32, &dbc.spec.tls).await?,
            // The user's Secret: read, never written (its issuer renews it).
            Some(secret) => api
                .get_opt(secret)
                .await?
                .and_then(|s| value(&s, TLS_CA_KEY)),
        };
        // The operator's HTTPS calls to the nodes verify against it.
        crate::client::auth::set_cluster_ca(&ns, &name, ca.as_deref());
    } else {
        crate::client::auth::set_cluster_ca(&ns, &name, None);
    }
    let users = dbc
        .spec
        .auth
        .as_ref()
        .map(|a| a.users.as_slice())
        .unwrap_or_default();
    for u in users.iter().filter(|u| u.secret_name.is_none()) {
        get_or_create(
            &api,
            &generated_user_secret_name(&name, &u.name),
            AUTH_PASSWORD_KEY,
            || build_user_secret(&o, &u.name, generate_password()),
        )
        .await?;
    }
    Ok(())
}

/// Records every existing cluster's admin token and binds its pods' IPs,
/// so the failover monitor's first calls after an operator start carry the
/// right token (it polls primaries before any reconcile has run). Best
/// effort: what fails here, the first reconcile of the cluster does again.
pub async fn warm(client: &kube::Client) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;
    let clusters: Api<DatabaseCluster> = Api::all(client.clone());
    let Ok(list) = clusters.list(&ListParams::default()).await else {
        return;
    };
    for dbc in list.items {
        let (ns, name) = (dbc.namespace().unwrap_or_default(), dbc.name_any());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let Ok(Some(s)) = secrets.get_opt(&internal_secret_name(&name)).await else {
            continue;
        };
        let Some(token) = value(&s, INTERNAL_TOKEN_KEY) else {
            continue;
        };
        crate::client::auth::set_cluster_token(&ns, &name, &token);
        if dbc.spec.tls.enabled {
            let tls = dbc
                .spec
                .tls
                .secret_name
                .clone()
                .unwrap_or_else(|| generated_tls_secret_name(&name));
            if let Ok(Some(s)) = secrets.get_opt(&tls).await {
                crate::client::auth::set_cluster_ca(&ns, &name, value(&s, "ca.crt").as_deref());
            }
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let lp = ListParams::default().labels(&format!("{}={name}", super::build::LABEL_CLUSTER));
        if let Ok(p) = pods.list(&lp).await {
            super::observe::bind_pods(&ns, &name, &p.items);
        }
    }
}

/// The value under `key` of Secret `name`, creating the Secret with
/// `build` when it does not exist (or lacks the key: then it is an error,
/// as the operator never overwrites a Secret).
async fn get_or_create(
    api: &Api<Secret>,
    name: &str,
    key: &str,
    build: impl FnOnce() -> Secret,
) -> Result<String, Error> {
    if let Some(s) = api.get_opt(name).await? {
        return value(&s, key).ok_or_else(|| {
            Error::Other(format!(
                "Secret {name} has no non-empty key {key:?}: add it, or delete the Secret to have a new one generated"
            ))
        });
    }
    let fresh = build();
    let v = fresh
        .string_data
        .as_ref()
        .and_then(|d| d.get(key).cloned())
        .unwrap_or_default();
    match api.create(&PostParams::default(), &fresh).await {
        Ok(_) => {
            tracing::info!(secret = name, "generated a credentials Secret");
            Ok(v)
        }
        // Created meanwhile (another reconcile): use what is stored.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let s = api.get(name).await?;
            value(&s, key).ok_or_else(|| Error::Other(format!("Secret {name} lacks {key:?}")))
        }
        Err(e) => Err(e.into()),
    }
}

const TLS_CA_KEY: &str = "ca.crt";

/// `<cluster>-tls`: a CA and a node certificate, issued when missing and
/// renewed before they expire ([`cert_rotation`](super::cert_rotation));
/// a user's `spec.tls.secretName` is used as is and never written. Returns
/// the CA bundle (`ca.crt`).
async fn ensure_tls(
    api: &Api<Secret>,
    o: &SecretOwner<'_>,
    shards: u32,
    spec: &crate::api::TlsSpec,
) -> Result<Option<String>, Error> {
    use super::cert_rotation::{apply, plan, Policy, TlsFiles};
    let name = generated_tls_secret_name(o.cluster);
    // The names of the shards that exist now; peers verify the CA, not
    // names, and clients that verify names use the Service names.
    let names = crate::operator::certs::node_dns_names(o.cluster, o.namespace, shards);
    let policy = Policy::new(spec.node_certificate_days);
    if let Some(existing) = api.get_opt(&name).await? {
        let files = (|| {
            Some(TlsFiles {
                tls_crt: value(&existing, "tls.crt")?,
                tls_key: value(&existing, "tls.key")?,
                ca_crt: value(&existing, TLS_CA_KEY)?,
                ca_key: value(&existing, "ca.key")?,
            })
        })();
        let Some(files) = files else {
            // Not the operator's layout (no ca.key): used as found.
            return Ok(value(&existing, TLS_CA_KEY));
        };
        let now = time::OffsetDateTime::now_utc();
        let step = plan(&files, &names, now, &policy)
            .and_then(|p| Ok((p, apply(p, &files, o.cluster, &names, now, &policy)?)));
        let next = match step {
            Ok((_, None)) => return Ok(Some(files.ca_crt)),
            Ok((p, Some(next))) => (p, next),
            Err(e) => {
                tracing::warn!(secret = %name, error = %e, "cannot plan the certificates' renewal; leaving the Secret as it is");
                return Ok(Some(files.ca_crt));
            }
        };
        let (p, next) = next;
        let mut updated = existing.clone();
        updated.string_data = Some(
            [
                ("tls.crt", next.tls_crt),
                ("tls.key", next.tls_key),
                (TLS_CA_KEY, next.ca_crt.clone()),
                ("ca.key", next.ca_key),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        );
        // Replaced at the version read: a concurrent writer makes this a
        // conflict and the next reconcile plans again.
        api.replace(&name, &PostParams::default(), &updated).await?;
        tracing::info!(secret = %name, plan = ?p, "renewed the cluster's certificates");
        return Ok(Some(next.ca_crt));
    }
    let issue = || -> Result<Secret, crate::operator::certs::CertError> {
        let ca = crate::operator::certs::issue_ca(o.cluster)?;
        let node = crate::operator::certs::issue_node_cert_at(
            &ca,
            &names,
            &[],
            time::OffsetDateTime::now_utc(),
            policy.node_days,
        )?;
        Ok(build_tls_secret(o, &ca, &node))
    };
    let secret = issue().map_err(|e| Error::Other(e.to_string()))?;
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %name, "issued the cluster's CA and node certificate");
            Ok(secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(TLS_CA_KEY).cloned()))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(api
            .get_opt(&name)
            .await?
            .and_then(|s| value(&s, TLS_CA_KEY))),
        Err(e) => Err(e.into()),
    }
}

fn value(s: &Secret, key: &str) -> Option<String> {
    let b = s.data.as_ref()?.get(key)?;
    let v = String::from_utf8(b.0.clone()).ok()?;
    let v = v.trim_end_matches(['\r', '\n']).to_string();
    (!v.is_empty()).then_some(v)
}

/// A client password: 32 characters from the URL-safe alphabet (no
/// characters a shell or a `redis://` URL would need escaped).
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..32)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_passwords_are_long_plain_and_distinct() {
        let (a, b) = (super::generate_password(), super::generate_password());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
