//! Reading Jobs the operator did not write the result of: whether a Job
//! finished, when, and the JSON its container left in the termination
//! message (`tessera backup … --termination-log /dev/termination-log`).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

/// Where a Job is.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// Not finished; `failed_attempt` holds the newest failed pod's message
    /// while the Job retries.
    Running { failed_attempt: Option<String> },
    Succeeded {
        message: String,
        at: Option<Timestamp>,
    },
    Failed {
        message: String,
        at: Option<Timestamp>,
    },
}

fn condition(job: &Job, type_: &str) -> Option<Option<Timestamp>> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// The pods a Job created (by owner reference), newest first.
pub fn pods_of<'a>(job: &Job, pods: &'a [Pod]) -> Vec<&'a Pod> {
    let Some(uid) = job.metadata.uid.as_deref() else {
        return Vec::new();
    };
    let mut out: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Job" && o.uid == uid)
        })
        .collect();
    out.sort_by_key(|p| {
        std::cmp::Reverse(
            p.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH),
        )
    });
    out
}

/// The termination message of a pod's container, if it terminated.
pub fn termination_message(pod: &Pod, container: &str) -> Option<(i32, String)> {
    let cs = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?;
    let t = cs
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()))?;
    let text = t
        .message
        .clone()
        .or_else(|| t.reason.clone())
        .unwrap_or_default();
    Some((t.exit_code, text))
}

/// The Job's state, with the message of the pod that decided it.
pub fn state(job: &Job, pods: &[Pod], container: &str) -> JobState {
    let pods = pods_of(job, pods);
    let newest = |succeeded: bool| {
        pods.iter()
            .filter_map(|p| termination_message(p, container))
            .find(|(code, _)| (*code == 0) == succeeded)
            .map(|(_, m)| m)
    };
    if let Some(at) = condition(job, "Complete") {
        let at = at.or_else(|| {
            job.status
                .as_ref()
                .and_then(|s| s.completion_time.as_ref())
                .map(|t| t.0)
        });
        return JobState::Succeeded {
            message: newest(true).unwrap_or_default(),
            at,
        };
    }
    if let Some(at) = condition(job, "Failed") {
        // A Job that failed without a pod message (deadline, the pod never
        // started) says why in its condition.
        let why = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Failed"))
            .map(|c| {
                format!(
                    "{}: {}",
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                )
            });
        return JobState::Failed {
            message: newest(false).or(why).unwrap_or_default(),
            at,
        };
    }
    JobState::Running {
        failed_attempt: newest(false),
    }
}

/// Why a Job's newest pod is not running yet, when it says so: it cannot be
/// scheduled (e.g. a backup claim that does not exist) or its container
/// cannot be created (e.g. a missing Secret).
pub fn stuck(job: &Job, pods: &[Pod]) -> Option<String> {
    let pod = *pods_of(job, pods).first()?;
    let st = pod.status.as_ref()?;
    if st.phase.as_deref() != Some("Pending") {
        return None;
    }
    let unschedulable = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unschedulable {
        return Some(format!(
            "pod {} cannot be scheduled: {}",
            pod.metadata.name.as_deref().unwrap_or("?"),
            c.message.as_deref().unwrap_or("no reason given")
        ));
    }
    st.container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| {
            !matches!(
                w.reason.as_deref(),
                None | Some("ContainerCreating") | Some("PodInitializing")
            )
        })
        .map(|w| {
            format!(
                "pod {}: {}: {}",
                pod.metadata.name.as_deref().unwrap_or("?"),
                w.reason.as_deref().unwrap_or_default(),
                w.message.as_deref().unwrap_or_default()
            )
        })
}

/// The `error` of a `{"error": …}` termination message; the text itself
/// when it is not one.
pub fn error_text(message: &str) -> String {
    serde_json::from_str::<serde_json::Value>(message)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or_else(|| message.trim().to_string())
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    pub fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).expect("valid time"))
    }

    /// A Job named `name` finished (or not) at `at`.
    pub fn job(name: &str, finished: Option<(&str, i64)>) -> Job {
        let mut j = Job::default();
        j.metadata.name = Some(name.into());
        j.metadata.uid = Some(format!("uid-{name}"));
        j.status = Some(JobStatus {
            conditions: finished.map(|(type_, at)| {
                vec![JobCondition {
                    type_: type_.into(),
                    status: "True".into(),
                    last_transition_time: Some(t(at)),
                    reason: Some("BackoffLimitExceeded".into()),
                    message: Some("Job has reached the specified backoff limit".into()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        j
    }

    /// A pod of `job`, created at `created`, whose `container` exited.
    pub fn pod(job: &str, container: &str, created: i64, code: i32, message: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(format!("{job}-{created}"));
        p.metadata.creation_timestamp = Some(t(created));
        p.metadata.owner_references = Some(vec![OwnerReference {
            kind: "Job".into(),
            name: job.into(),
            uid: format!("uid-{job}"),
            api_version: "batch/v1".into(),
            ..Default::default()
        }]);
        p.status = Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: container.into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        message: Some(message.into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    #[test]
    fn state_reads_the_deciding_pods_message() {
        let pods = vec![
            pod("j", "restore", 10, 1, r#"{"error":"connection refused"}"#),
            pod(
                "j",
                "restore",
                20,
                3,
                r#"{"error":"checksum mismatch in x"}"#,
            ),
            pod("other", "restore", 30, 0, "{}"),
        ];
        match state(&job("j", Some(("Failed", 25))), &pods, "restore") {
            JobState::Failed { message, at } => {
                assert_eq!(error_text(&message), "checksum mismatch in x");
                assert_eq!(at, Some(t(25).0));
            }
            s => panic!("{s:?}"),
        }
        match state(&job("j", None), &pods[..1], "restore") {
            JobState::Running { failed_attempt } => {
                assert_eq!(
                    failed_attempt.as_deref().map(error_text).as_deref(),
                    Some("connection refused")
                )
            }
            s => panic!("{s:?}"),
        }
        match state(&job("other", Some(("Complete", 31))), &pods, "restore") {
            JobState::Succeeded { message, .. } => assert_eq!(message, "{}"),
            s => panic!("{s:?}"),
        }
        // No pod message: the Job's own reason.
        match state(&job("gone", Some(("Failed", 40))), &pods, "restore") {
            JobState::Failed { message, .. } => assert!(message.contains("BackoffLimitExceeded")),
            s => panic!("{s:?}"),
        }
        assert_eq!(error_text("plain words\n"), "plain words");
    }

    #[test]
    fn stuck_pods_say_why() {
        use k8s_openapi::api::core::v1::{ContainerStateWaiting, PodCondition};
        let mut p = pod("j", "restore", 10, 0, "");
        let st = p.status.as_mut().expect("status");
        st.phase = Some("Pending".into());
        st.container_statuses = None;
        st.conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            message: Some(r#"persistentvolumeclaim "old-backup" not found"#.into()),
            ..Default::default()
        }]);
        let j = job("j", None);
        let why = stuck(&j, std::slice::from_ref(&p)).expect("stuck");
        assert!(
            why.contains(r#"persistentvolumeclaim "old-backup" not found"#),
            "{why}"
        );
        let st = p.status.as_mut().expect("status");
        st.conditions = None;
        st.container_statuses = Some(vec![ContainerStatus {
            name: "restore".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CreateContainerConfigError".into()),
                    message: Some(r#"secret "s3-creds" not found"#.into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let why = stuck(&j, std::slice::from_ref(&p)).expect("stuck");
        assert!(
            why.contains("CreateContainerConfigError") && why.contains("s3-creds"),
            "{why}"
        );
        let st = p.status.as_mut().expect("status");
        st.container_statuses = None;
        assert!(stuck(&j, std::slice::from_ref(&p)).is_none());
    }
}
