//! The Services: per-shard headless and primary, and the client Service.

use super::*;

fn port(name: &str, p: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: p,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The client port, the TLS port (with `spec.tls`), and on the headless
/// Service the admin port.
fn ports(c: &ValidatedCluster, admin: bool) -> Vec<ServicePort> {
    let mut v = vec![port("redis", REDIS_PORT)];
    if c.spec.tls.enabled {
        v.push(port("redis-tls", REDIS_TLS_PORT));
    }
    if admin {
        v.push(port("admin", ADMIN_PORT));
    }
    v
}

pub fn build_headless_service(c: &ValidatedCluster, shard: u32) -> Service {
    Service {
        metadata: meta(c, c.shard_name(shard), shard_labels(c, shard)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Peers must find each other before they pass readiness.
            publish_not_ready_addresses: Some(true),
            selector: Some(shard_selector(&c.name, shard)),
            ports: Some(ports(c, true)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One address for the whole cluster; any member answers and redirects.
pub fn build_client_service(c: &ValidatedCluster) -> Service {
    let mut selector = cluster_selector(&c.name);
    selector.insert(LABEL_MEMBER.into(), "true".into());
    Service {
        metadata: meta(c, client_service_name(&c.name), labels(c)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(ports(c, false)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Follows the shard's primary through the role label the operator moves.
pub fn build_primary_service(c: &ValidatedCluster, shard: u32) -> Service {
    let mut selector = shard_selector(&c.name, shard);
    selector.insert(LABEL_ROLE.into(), "primary".into());
    Service {
        metadata: meta(
            c,
            primary_service_name(&c.name, shard),
            shard_labels(c, shard),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(ports(c, false)),
            ..Default::default()
        }),
        ..Default::default()
    }
}
