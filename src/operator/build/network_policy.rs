//! The cluster's NetworkPolicy: clients may reach the client port from
//! anywhere; the admin port (control calls, backups' data) only from the
//! operator's pods and the cluster's own pods (nodes and its backup and
//! restore Jobs, which all carry the cluster label); the metrics port
//! (probes and /metrics, no data) from those and any namespace the user
//! lists for metrics scrapers. Replication and slot migration run over the
//! client port (authenticated with the cluster password), so they are
//! admitted with it.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};

use super::*;

/// Where the operator's pods are, as a policy peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPeer {
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
}

impl OperatorPeer {
    /// The chart's operator pods (`app.kubernetes.io/name:
    /// tessera-operator`) in `namespace`.
    pub fn chart(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            pod_labels: [(LABEL_NAME.to_string(), "tessera-operator".to_string())].into(),
        }
    }
}

pub fn network_policy_name(cluster: &str) -> String {
    format!("{cluster}-nodes")
}

const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn in_namespace(ns: &str, pods: Option<BTreeMap<String, String>>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some([(NAMESPACE_NAME_LABEL.to_string(), ns.to_string())].into()),
            ..Default::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: pods,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The policy, or None when `spec.networkPolicy.enabled` is false.
pub fn build_network_policy(
    c: &ValidatedCluster,
    operator: &OperatorPeer,
) -> Option<NetworkPolicy> {
    let np = &c.spec.network_policy;
    if !np.enabled {
        return None;
    }
    let mut node_pods = cluster_selector(&c.name);
    node_pods.insert(LABEL_COMPONENT.into(), "node".into());
    let admin_from = vec![
        in_namespace(&operator.namespace, Some(operator.pod_labels.clone())),
        // Same namespace (no namespace selector): the cluster's pods.
        NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(cluster_selector(&c.name)),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let metrics_from = admin_from
        .iter()
        .cloned()
        .chain(
            np.metrics_namespaces
                .iter()
                .map(|ns| in_namespace(ns, None)),
        )
        .collect();
    Some(NetworkPolicy {
        metadata: meta(c, network_policy_name(&c.name), labels(c)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(node_pods),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    ports: Some(
                        std::iter::once(REDIS_PORT)
                            .chain(c.spec.tls.enabled.then_some(REDIS_TLS_PORT))
                            .map(tcp)
                            .collect(),
                    ),
                    from: None,
                },
                NetworkPolicyIngressRule {
                    ports: Some(vec![tcp(ADMIN_PORT)]),
                    from: Some(admin_from),
                },
                NetworkPolicyIngressRule {
                    ports: Some(vec![tcp(METRICS_PORT)]),
                    from: Some(metrics_from),
                },
            ]),
            ..Default::default()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DatabaseCluster, DatabaseClusterSpec};
    use crate::operator::validate::{validate, Existing};

    fn cluster(json: &str) -> ValidatedCluster {
        let spec: DatabaseClusterSpec = serde_json::from_str(json).expect("spec");
        let mut d = DatabaseCluster::new("users", spec);
        d.metadata.namespace = Some("prod".into());
        d.metadata.uid = Some("u-1".into());
        validate(&d, "tessera:test", &Existing::default()).expect("valid")
    }

    fn rules(json: &str) -> Vec<NetworkPolicyIngressRule> {
        build_network_policy(&cluster(json), &OperatorPeer::chart("tessera-system"))
            .expect("a policy")
            .spec
            .expect("spec")
            .ingress
            .expect("ingress")
    }

    fn port_of(r: &NetworkPolicyIngressRule) -> i32 {
        match r.ports.as_ref().expect("ports")[0].port {
            Some(IntOrString::Int(p)) => p,
            ref other => panic!("port {other:?}"),
        }
    }

    #[test]
    fn client_port_is_open_to_all_and_admin_only_to_operator_and_own_pods() {
        let np = build_network_policy(&cluster("{}"), &OperatorPeer::chart("tessera-system"))
            .expect("on by default");
        assert_eq!(np.metadata.name.as_deref(), Some("users-nodes"));
        assert_eq!(np.metadata.namespace.as_deref(), Some("prod"));
        let spec = np.spec.expect("spec");
        let sel = spec
            .pod_selector
            .and_then(|s| s.match_labels)
            .expect("selector");
        assert_eq!(sel[LABEL_CLUSTER], "users");
        assert_eq!(sel[LABEL_COMPONENT], "node");
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = spec.ingress.expect("ingress");
        assert_eq!(rules.len(), 3);
        assert_eq!(port_of(&rules[0]), REDIS_PORT);
        let client_ports: Vec<_> = rules[0]
            .ports
            .as_ref()
            .expect("ports")
            .iter()
            .map(|p| p.port.clone())
            .collect();
        assert_eq!(
            client_ports,
            vec![
                Some(IntOrString::Int(REDIS_PORT)),
                Some(IntOrString::Int(REDIS_TLS_PORT))
            ],
            "TLS is on by default: both client ports open"
        );
        assert!(rules[0].from.is_none(), "clients from anywhere");
        assert_eq!(port_of(&rules[1]), ADMIN_PORT);
        let from = rules[1].from.as_ref().expect("admin peers");
        assert_eq!(from.len(), 2);
        let op = &from[0];
        assert_eq!(
            op.namespace_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(
                [(
                    NAMESPACE_NAME_LABEL.to_string(),
                    "tessera-system".to_string()
                )]
                .into()
            )
        );
        assert_eq!(
            op.pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some([(LABEL_NAME.to_string(), "tessera-operator".to_string())].into())
        );
        let own = &from[1];
        assert!(own.namespace_selector.is_none(), "own namespace only");
        assert_eq!(
            own.pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(cluster_selector("users"))
        );
    }

    #[test]
    fn metrics_namespaces_reach_the_metrics_port_and_not_the_admin_port() {
        let r = rules(r#"{"networkPolicy":{"metricsNamespaces":["monitoring"]}}"#);
        assert_eq!(port_of(&r[1]), ADMIN_PORT);
        let admin = r[1].from.as_ref().expect("admin peers");
        assert_eq!(admin.len(), 2, "operator and own pods only: {admin:?}");
        assert_eq!(port_of(&r[2]), METRICS_PORT);
        let from = r[2].from.as_ref().expect("metrics peers");
        assert_eq!(from.len(), 3);
        assert_eq!(&from[..2], &admin[..], "the admin peers scrape too");
        let m = &from[2];
        assert_eq!(
            m.namespace_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some([(NAMESPACE_NAME_LABEL.to_string(), "monitoring".to_string())].into())
        );
        assert_eq!(
            m.pod_selector.as_ref().and_then(|s| s.match_labels.clone()),
            None
        );
    }

    #[test]
    fn disabled_means_no_policy() {
        let c = cluster(r#"{"networkPolicy":{"enabled":false}}"#);
        assert!(build_network_policy(&c, &OperatorPeer::chart("x")).is_none());
    }

    #[test]
    fn backup_and_restore_job_pods_carry_the_cluster_label_the_policy_admits() {
        let c = cluster(r#"{"backup":{"schedule":"@daily"}}"#);
        let labels = build_backup_cronjob(&c)
            .and_then(|cj| cj.spec)
            .and_then(|s| s.job_template.spec)
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.labels)
            .expect("job pod labels");
        assert_eq!(labels[LABEL_CLUSTER], "users");
    }
}
