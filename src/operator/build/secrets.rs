//! The Secrets the operator generates for a cluster: the internal token
//! (`<cluster>-internal`: the admin API's bearer token, held by the
//! operator, the nodes and the backup Jobs) and, when `spec.auth` names no
//! Secret, the client password (`<cluster>-auth`). Both are created once
//! (never re-applied, which would replace the random values) and owned by
//! the DatabaseCluster, so they go with it.

use k8s_openapi::api::core::v1::Secret;

use super::*;

/// Key of the token in `<cluster>-internal`.
pub const INTERNAL_TOKEN_KEY: &str = "token";
/// Key of the password in a generated `<cluster>-auth`.
pub const AUTH_PASSWORD_KEY: &str = "password";

pub fn internal_secret_name(cluster: &str) -> String {
    format!("{cluster}-internal")
}

pub fn generated_auth_secret_name(cluster: &str) -> String {
    format!("{cluster}-auth")
}

/// The Secret and key holding the password clients AUTH with: the user's
/// (`spec.auth`) or the generated one.
pub fn auth_secret(c: &ValidatedCluster) -> (String, String) {
    match c
        .spec
        .auth
        .as_ref()
        .and_then(|a| Some((a.secret_name.clone()?, a)))
    {
        Some((name, a)) => (name, a.key.clone()),
        None => (
            generated_auth_secret_name(&c.name),
            AUTH_PASSWORD_KEY.to_string(),
        ),
    }
}

/// Whether the operator generates the `default` user's password.
pub fn generates_auth_secret(spec: &crate::api::DatabaseClusterSpec) -> bool {
    spec.auth
        .as_ref()
        .and_then(|a| a.secret_name.as_ref())
        .is_none()
}

pub fn generated_tls_secret_name(cluster: &str) -> String {
    format!("{cluster}-tls")
}

/// The Secret holding the nodes' TLS files (cert-manager's layout).
pub fn tls_secret(c: &ValidatedCluster) -> String {
    c.spec
        .tls
        .secret_name
        .clone()
        .unwrap_or_else(|| generated_tls_secret_name(&c.name))
}

/// `<cluster>-tls` (type `kubernetes.io/tls`): the node certificate and
/// key, and the CA's certificate (`ca.crt`) and key (`ca.key`, kept so the
/// operator can issue again under the same CA).
pub fn build_tls_secret(
    o: &SecretOwner<'_>,
    ca: &crate::operator::certs::Issued,
    node: &crate::operator::certs::Issued,
) -> Secret {
    let mut s = generated(
        o,
        generated_tls_secret_name(o.cluster),
        "tls",
        "tls.crt",
        node.cert_pem.clone(),
    );
    s.type_ = Some("kubernetes.io/tls".into());
    if let Some(d) = s.string_data.as_mut() {
        d.insert("tls.key".into(), node.key_pem.clone());
        d.insert("ca.crt".into(), ca.cert_pem.clone());
        d.insert("ca.key".into(), ca.key_pem.clone());
    }
    s
}

pub fn generated_user_secret_name(cluster: &str, user: &str) -> String {
    format!("{cluster}-user-{user}")
}

/// The Secret holding an application user's password (key `password`).
pub fn user_secret(cluster: &str, u: &crate::api::AclUserSpec) -> String {
    u.secret_name
        .clone()
        .unwrap_or_else(|| generated_user_secret_name(cluster, &u.name))
}

/// `<cluster>-user-<name>` with `username` and `password`.
pub fn build_user_secret(o: &SecretOwner<'_>, user: &str, password: String) -> Secret {
    let mut s = generated(
        o,
        generated_user_secret_name(o.cluster, user),
        "client-credentials",
        AUTH_PASSWORD_KEY,
        password,
    );
    if let Some(d) = s.string_data.as_mut() {
        d.insert("username".into(), user.to_string());
    }
    s
}

/// Where a generated Secret belongs.
pub struct SecretOwner<'a> {
    pub namespace: &'a str,
    pub cluster: &'a str,
    pub owner: OwnerReference,
}

fn generated(
    o: &SecretOwner<'_>,
    name: String,
    component: &str,
    key: &str,
    value: String,
) -> Secret {
    let labels: BTreeMap<String, String> = [
        (LABEL_NAME, "tessera".to_string()),
        (LABEL_INSTANCE, o.cluster.to_string()),
        (LABEL_MANAGED_BY, "tessera-operator".to_string()),
        (LABEL_CLUSTER, o.cluster.to_string()),
        (LABEL_COMPONENT, component.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(o.namespace.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![o.owner.clone()]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some([(key.to_string(), value)].into()),
        ..Default::default()
    }
}

/// `<cluster>-internal` with `token`.
pub fn build_internal_secret(o: &SecretOwner<'_>, token: String) -> Secret {
    generated(
        o,
        internal_secret_name(o.cluster),
        "internal-credentials",
        INTERNAL_TOKEN_KEY,
        token,
    )
}

/// `<cluster>-auth` with `password`.
pub fn build_auth_secret(o: &SecretOwner<'_>, password: String) -> Secret {
    generated(
        o,
        generated_auth_secret_name(o.cluster),
        "client-credentials",
        AUTH_PASSWORD_KEY,
        password,
    )
}
