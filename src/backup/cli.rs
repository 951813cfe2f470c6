//! `tessera backup …`: the command line of the backup CronJob, the restore
//! init container, and operators by hand.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::manage::{self, Retention};
use super::target::S3Options;
use super::{restore, run, Target};

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: BackupCommand,
    /// Log as JSON lines (the default in containers).
    #[arg(long, env = "TESSERA_LOG_JSON", global = true)]
    pub log_json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Where backups live: a directory (`/backups`, `file:///backups`: a
    /// mounted PersistentVolumeClaim) or `s3://bucket/prefix`.
    #[arg(long, env = "TESSERA_BACKUP_TARGET")]
    pub target: String,
    /// The DatabaseCluster's name (backups are kept under it).
    #[arg(long, env = "TESSERA_CLUSTER")]
    pub cluster: String,
    /// S3 endpoint for non-AWS servers (path-style requests), e.g.
    /// http://minio:9000. Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "TESSERA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "TESSERA_S3_REGION")]
    pub s3_region: Option<String>,
}

/// Part size of new files' checksums (hidden: tests use small parts).
#[derive(Args, Debug, Clone)]
pub struct PartArgs {
    #[arg(
        long,
        env = "TESSERA_BACKUP_PART_BYTES",
        hide = true,
        default_value_t = super::checksum::DEFAULT_PART_BYTES,
        value_parser = clap::value_parser!(u64).range(super::checksum::MIN_PART_BYTES..)
    )]
    pub part_bytes: u64,
}

impl TargetArgs {
    fn open(&self) -> Result<Target> {
        Ok(Target::open(
            &self.target,
            &S3Options {
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
            },
        )?)
    }
}

#[derive(Args, Debug, Clone)]
pub struct RetentionArgs {
    /// Keep this many newest backups.
    #[arg(long, env = "TESSERA_BACKUP_KEEP")]
    pub keep: Option<usize>,
    /// Prune backups older than this (e.g. 7d, 12h).
    #[arg(long, env = "TESSERA_BACKUP_MAX_AGE")]
    pub max_age: Option<String>,
}

impl RetentionArgs {
    fn retention(&self) -> Result<Retention> {
        Ok(Retention {
            keep: self.keep,
            max_age_ms: self.max_age.as_deref().map(manage::parse_age).transpose()?,
        })
    }
}

/// `--reuse-snapshot-within`: an age like `--max-age` (`10m`), or `0`;
/// in milliseconds.
fn parse_reuse_within(s: &str) -> Result<u64, String> {
    if s == "0" {
        return Ok(0);
    }
    manage::parse_age(s).map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Take a backup: every shard's snapshot plus the archived log.
    Run {
        #[command(flatten)]
        target: TargetArgs,
        /// Admin endpoints (host:port) of the cluster's nodes, comma-separated.
        #[arg(
            long,
            env = "TESSERA_BACKUP_NODES",
            value_delimiter = ',',
            required = true
        )]
        nodes: Vec<String>,
        #[command(flatten)]
        retention: RetentionArgs,
        #[command(flatten)]
        parts: PartArgs,
        /// Reuse a node's newest snapshot if it finished less than this long
        /// ago (s, m, h, d, w, e.g. 10m) instead of taking a new one; 0 (the
        /// default) always takes a fresh snapshot, so that each backup's
        /// snapshot is its own point (point-in-time restores pick the newest
        /// backup at or before the target).
        #[arg(
            long,
            env = "TESSERA_BACKUP_REUSE_SNAPSHOT_WITHIN",
            default_value = "0",
            value_parser = parse_reuse_within
        )]
        reuse_snapshot_within: u64,
        /// Also write the JSON summary here (a Job's terminationMessagePath).
        #[arg(long, env = "TESSERA_TERMINATION_LOG")]
        termination_log: Option<PathBuf>,
    },
    /// Archive the primaries' log only (no snapshot).
    Archive {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(
            long,
            env = "TESSERA_BACKUP_NODES",
            value_delimiter = ',',
            required = true
        )]
        nodes: Vec<String>,
        #[command(flatten)]
        parts: PartArgs,
    },
    /// List backups and the recoverability window.
    List {
        #[command(flatten)]
        target: TargetArgs,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Read every file of a backup and check sizes and SHA-256 checksums.
    Verify {
        #[command(flatten)]
        target: TargetArgs,
        /// A backup ID, `latest` or `all`.
        #[arg(long, default_value = "latest")]
        backup: String,
    },
    /// Apply retention now.
    Prune {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        retention: RetentionArgs,
    },
    /// Choose the backup and the exact time a restore brings back, and
    /// print them (JSON); the operator pins every node's restore to it.
    Plan {
        #[command(flatten)]
        target: TargetArgs,
        /// A backup ID or `latest`.
        #[arg(long, env = "TESSERA_RESTORE_BACKUP", default_value = "latest")]
        backup: String,
        /// Restore to this time (RFC 3339).
        #[arg(long, env = "TESSERA_RESTORE_TARGET_TIME")]
        target_time: Option<String>,
        /// Also write the JSON here (a Job's terminationMessagePath).
        #[arg(long, env = "TESSERA_TERMINATION_LOG")]
        termination_log: Option<PathBuf>,
    },
    /// Restore one shard into a node's (empty) data directory.
    Restore {
        #[command(flatten)]
        target: TargetArgs,
        /// A backup ID or `latest`.
        #[arg(long, env = "TESSERA_RESTORE_BACKUP", default_value = "latest")]
        backup: String,
        /// Restore to this time (RFC 3339); default: the backup's cut
        /// (`latest`: the last archived point).
        #[arg(long, env = "TESSERA_RESTORE_TARGET_TIME")]
        target_time: Option<String>,
        /// The shard, by name or index in slot order (needed with several).
        #[arg(long, env = "TESSERA_RESTORE_SHARD")]
        shard: Option<String>,
        /// The node's data directory.
        #[arg(long, env = "TESSERA_DATA_DIR")]
        data_dir: PathBuf,
        /// Only print the plan.
        #[arg(long)]
        dry_run: bool,
        /// Also write the JSON result (or the error) here (a Job's
        /// terminationMessagePath).
        #[arg(long, env = "TESSERA_TERMINATION_LOG")]
        termination_log: Option<PathBuf>,
    },
}

/// Exit status for errors that retrying cannot fix (a corrupt or
/// incomplete backup, a refused plan): Jobs fail at once on it
/// (`podFailurePolicy`) instead of retrying.
pub const EXIT_PERMANENT: i32 = 3;

fn permanent(e: &anyhow::Error) -> bool {
    e.chain()
        .find_map(|c| c.downcast_ref::<super::BackupError>())
        .is_some_and(super::BackupError::is_permanent)
}

/// `{"error": …, "permanent": …}`, cut to fit a termination message.
fn error_message(e: &anyhow::Error) -> String {
    let mut doc = run::JobSummary::failed(&format!("{e:#}"));
    let text = doc.error.take().unwrap_or_default();
    serde_json::json!({ "error": text, "permanent": permanent(e) }).to_string()
}

fn write_termination_log(path: &Option<PathBuf>, text: &str) {
    if let Some(p) = path {
        if let Err(e) = std::fs::write(p, text) {
            tracing::warn!(path = %p.display(), error = %e, "failed to write the termination log");
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn run(a: BackupArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .context("failed to start the runtime")?;
    match rt.block_on(run_async(a.command)) {
        Ok(()) => Ok(()),
        Err(e) if permanent(&e) => {
            eprintln!("Error: {e:#}");
            std::process::exit(EXIT_PERMANENT);
        }
        Err(e) => Err(e),
    }
}

async fn run_async(c: BackupCommand) -> Result<()> {
    match c {
        BackupCommand::Run {
            target,
            nodes,
            retention,
            parts,
            reuse_snapshot_within,
            termination_log,
        } => {
            let res = async {
                let t = target.open()?.with_part_bytes(parts.part_bytes);
                let r = run::run(
                    &t,
                    &target.cluster,
                    &nodes,
                    &retention.retention()?,
                    reuse_snapshot_within,
                )
                .await?;
                anyhow::Ok(r)
            }
            .await;
            let summary = match &res {
                Ok(r) => r.summary().to_termination_message(),
                Err(e) => run::JobSummary::failed(&format!("{e:#}")).to_termination_message(),
            };
            write_termination_log(&termination_log, &summary);
            let r = res.context("the backup failed")?;
            print_json(&r)?;
        }
        BackupCommand::Archive {
            target,
            nodes,
            parts,
        } => {
            let t = target.open()?.with_part_bytes(parts.part_bytes);
            let points = run::archive(&t, &target.cluster, &nodes)
                .await
                .context("archiving failed")?;
            print_json(&points)?;
        }
        BackupCommand::List { target, json } => {
            let t = target.open()?;
            let l = manage::list(&t, &target.cluster).await?;
            if json {
                print_json(&l)?;
            } else {
                println!(
                    "{:<22} {:<10} {:<26} {:>12} {:>10} {:>6}",
                    "ID", "STATUS", "STARTED", "BYTES", "MS", "SHARDS"
                );
                for b in &l.backups {
                    println!(
                        "{:<22} {:<10} {:<26} {:>12} {:>10} {:>6}",
                        b.id,
                        if b.complete { "complete" } else { "incomplete" },
                        b.started_at.as_deref().unwrap_or("-"),
                        b.bytes.map(|v| v.to_string()).unwrap_or("-".into()),
                        b.duration_ms.map(|v| v.to_string()).unwrap_or("-".into()),
                        b.shards.map(|v| v.to_string()).unwrap_or("-".into()),
                    );
                }
                println!(
                    "recoverable from {} to {}",
                    l.first_recoverability_point.as_deref().unwrap_or("-"),
                    l.last_recoverability_point.as_deref().unwrap_or("-")
                );
            }
        }
        BackupCommand::Verify { target, backup } => {
            let t = target.open()?;
            let ids: Vec<String> = match backup.as_str() {
                "all" => manage::backups(&t, &target.cluster)
                    .await?
                    .into_iter()
                    .map(|l| l.id)
                    .collect(),
                "latest" => match manage::complete(&t, &target.cluster).await?.last() {
                    Some(m) => vec![m.id.clone()],
                    None => bail!("no complete backup of {} in {}", target.cluster, t.describe),
                },
                id => vec![id.to_string()],
            };
            let mut bad = 0;
            for id in ids {
                let r = manage::verify(&t, &target.cluster, &id).await?;
                if !r.ok {
                    bad += 1;
                }
                print_json(&r)?;
            }
            if bad > 0 {
                bail!("{bad} backup(s) failed verification");
            }
        }
        BackupCommand::Prune { target, retention } => {
            let t = target.open()?;
            let pruned = manage::prune(&t, &target.cluster, &retention.retention()?).await?;
            print_json(&pruned)?;
        }
        BackupCommand::Plan {
            target,
            backup,
            target_time,
            termination_log,
        } => {
            let res = async {
                let t = target.open()?;
                let time = target_time.as_deref().map(super::parse_time).transpose()?;
                let plan = restore::plan(&t, &target.cluster, Some(&backup), time).await?;
                anyhow::Ok(plan.summary())
            }
            .await;
            match res {
                Ok(p) => {
                    write_termination_log(&termination_log, &serde_json::to_string(&p)?);
                    print_json(&p)?;
                }
                Err(e) => {
                    write_termination_log(&termination_log, &error_message(&e));
                    return Err(e.context("no restore plan"));
                }
            }
        }
        BackupCommand::Restore {
            target,
            backup,
            target_time,
            shard,
            data_dir,
            dry_run,
            termination_log,
        } => {
            let res = async {
                let t = target.open()?;
                let time = target_time.as_deref().map(super::parse_time).transpose()?;
                let plan = restore::plan(&t, &target.cluster, Some(&backup), time).await?;
                let s = restore::shard(&plan, shard.as_deref())?;
                if dry_run {
                    return anyhow::Ok(serde_json::json!({
                        "backup": plan.manifest.id,
                        "shard": s.name,
                        "targetTime": super::fmt_ms(plan.target_ms),
                    }));
                }
                let r = restore::restore_shard(&t, &plan, s, &data_dir).await?;
                Ok(serde_json::to_value(&r)?)
            }
            .await;
            match res {
                Ok(v) => {
                    write_termination_log(&termination_log, &v.to_string());
                    print_json(&v)?;
                }
                Err(e) => {
                    write_termination_log(&termination_log, &error_message(&e));
                    return Err(e.context("the restore failed"));
                }
            }
        }
    }
    Ok(())
}
