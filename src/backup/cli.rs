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
    },
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
    rt.block_on(run_async(a.command))
}

async fn run_async(c: BackupCommand) -> Result<()> {
    match c {
        BackupCommand::Run {
            target,
            nodes,
            retention,
            termination_log,
        } => {
            let t = target.open()?;
            let res = run::run(&t, &target.cluster, &nodes, &retention.retention()?).await;
            let summary = match &res {
                Ok(r) => serde_json::to_string(r)?,
                Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
            };
            if let Some(p) = termination_log {
                let _ = std::fs::write(&p, &summary);
            }
            let r = res.context("the backup failed")?;
            print_json(&r)?;
        }
        BackupCommand::Archive { target, nodes } => {
            let t = target.open()?;
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
        BackupCommand::Restore {
            target,
            backup,
            target_time,
            shard,
            data_dir,
            dry_run,
        } => {
            let t = target.open()?;
            let time = target_time.as_deref().map(super::parse_time).transpose()?;
            let plan = restore::plan(&t, &target.cluster, Some(&backup), time).await?;
            let s = restore::shard(&plan, shard.as_deref())?;
            if dry_run {
                print_json(&serde_json::json!({
                    "backup": plan.manifest.id,
                    "shard": s.name,
                    "targetTime": super::fmt_ms(plan.target_ms),
                }))?;
                return Ok(());
            }
            let r = restore::restore_shard(&t, &plan, s, &data_dir)
                .await
                .context("the restore failed")?;
            print_json(&r)?;
        }
    }
    Ok(())
}
