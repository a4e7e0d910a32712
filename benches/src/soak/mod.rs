//! `ballast bench soak`: a long run of ordinary churn on a whole cluster,
//! recording every sample interval what must not grow (issue 17).
//!
//! The cluster is `ballast up --runtime sim --nodes 100`'s (started by the
//! soak on free ports, or a running one with `--attach`; see [`cluster`]).
//! While the churn runs ([`churn`]: Deployments created, scaled and deleted,
//! pods whose probes fail, node Lease renewals by the simulated kubelets),
//! [`sample`] records the storage's size, revisions and alarms, each
//! process's RSS, disk use and the apiserver's cached objects. At the end
//! [`chart`] writes `soak.csv`, `soak.svg` and `summary.md` to the output
//! directory and judges the run: every size series flat (last third within
//! 1.25× of the middle third), no NOSPACE alarm, no NotReady node.
//!
//! # Layout
//! - [`cluster`] — start or find the cluster; pids, directories, clients.
//! - [`churn`] — the workload.
//! - [`sample`] — one sample of every series.
//! - [`chart`] — CSV, Markdown table and the verdict (the SVG is drawn
//!   from the CSV by [`crate::chart`]).
//!
//! # Bounds
//! The run ends at `duration` (or SIGINT/SIGTERM, which still writes what
//! was recorded and stops the cluster); every call has a deadline; the
//! churn keeps at most ~3 s of pod changes outstanding and at most
//! `deployments × max_replicas` churned pods.

pub mod chart;
pub mod churn;
pub mod cluster;
pub mod sample;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::{json, Value};

pub use churn::ChurnConfig;
pub use cluster::{ClusterSource, SpawnConfig};

/// What `ballast bench soak` runs.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// How long the churn runs.
    pub duration: Duration,
    /// Time between samples.
    pub sample_interval: Duration,
    /// The cluster.
    pub cluster: ClusterSource,
    /// Target pod creations plus deletions per second.
    pub pod_churn: u32,
    /// Deployments scaled and recreated.
    pub churn_deployments: usize,
    /// The most replicas one churned Deployment is scaled to.
    pub max_replicas: i32,
    /// Replicas of each probe-failing Deployment.
    pub probe_replicas: i32,
    /// How often one churned Deployment is deleted and created again.
    pub recreate_every: Duration,
    /// Where `soak.csv`, `soak.svg` and `summary.md` go.
    pub out_dir: PathBuf,
    /// A progress line on stderr per sample.
    pub progress: bool,
}

/// Rejects settings that cannot run, naming the flag.
pub fn validate(config: &SoakConfig) -> anyhow::Result<()> {
    ensure!(
        config.sample_interval >= Duration::from_secs(1),
        "--sample-interval must be at least 1s"
    );
    ensure!(
        config.duration >= config.sample_interval * 6,
        "--duration ({:?}) must hold at least 6 samples of --sample-interval ({:?}): \
         the verdict compares the middle and last thirds",
        config.duration,
        config.sample_interval
    );
    ensure!(
        config.duration.as_secs_f64() / config.sample_interval.as_secs_f64() <= 100_000.0,
        "--duration / --sample-interval: at most 100,000 samples"
    );
    ensure!(
        (1..=10_000).contains(&config.pod_churn),
        "--pod-churn must be within 1..=10000 pod changes per second"
    );
    ensure!(
        (1..=1_000).contains(&config.churn_deployments),
        "--churn-deployments must be within 1..=1000"
    );
    ensure!(
        (1..=5_000).contains(&config.max_replicas),
        "--max-replicas must be within 1..=5000"
    );
    ensure!(
        (0..=1_000).contains(&config.probe_replicas),
        "--probe-replicas must be within 0..=1000"
    );
    ensure!(
        config.recreate_every >= Duration::from_secs(1),
        "--recreate-every must be at least 1s"
    );
    if let ClusterSource::Spawn(s) = &config.cluster {
        ensure!(
            (1..=1_000).contains(&s.nodes),
            "--nodes must be within 1..=1000"
        );
        ensure!(
            s.event_ttl >= Duration::from_secs(1),
            "--event-ttl must be at least 1s"
        );
    }
    Ok(())
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Resolves on the first SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the soak; the result (also written to `out_dir`) is one JSON
/// object with the verdict.
pub async fn run(config: SoakConfig) -> anyhow::Result<Value> {
    validate(&config)?;
    std::fs::create_dir_all(&config.out_dir)
        .with_context(|| format!("--out {}", config.out_dir.display()))?;
    if config.progress {
        eprintln!("soak: starting the cluster…");
    }
    let opened = tokio::select! {
        c = cluster::Cluster::open(&config.cluster) => Some(c),
        _ = interrupted() => None,
    };
    let mut cluster = match opened {
        Some(c) => c?,
        None => anyhow::bail!("interrupted while starting the cluster"),
    };
    if config.progress {
        eprintln!("soak: {}", cluster.description);
    }
    let namespace = format!("soak-{}", unix_secs());
    let result = soak(&config, &mut cluster, &namespace).await;
    if config.progress {
        eprintln!("soak: stopping…");
    }
    if let ClusterSource::Attach { .. } = config.cluster {
        churn::teardown(&cluster.client(), &namespace).await;
    }
    cluster.stop().await;
    result
}

async fn soak(
    config: &SoakConfig,
    cluster: &mut cluster::Cluster,
    namespace: &str,
) -> anyhow::Result<Value> {
    let client = cluster.client();
    let namespace = namespace.to_string();
    let churn_config = ChurnConfig {
        namespace: namespace.clone(),
        rate: config.pod_churn,
        deployments: config.churn_deployments,
        max_replicas: config.max_replicas,
        probe_replicas: config.probe_replicas,
        recreate_every: config.recreate_every,
    };
    churn::setup(&client, &churn_config).await?;
    let columns = sample::columns(cluster);
    let counters = Arc::new(churn::ChurnCounters::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let churn_task = tokio::spawn(churn::run(
        client.clone(),
        churn_config,
        counters.clone(),
        stop_rx,
    ));

    let started = Instant::now();
    let started_unix = unix_secs();
    let mut rows: Vec<chart::Row> = Vec::new();
    let mut previous = sample::Previous::now(&counters);
    let mut interrupted_early = false;
    let mut died: Option<String> = None;
    let samples =
        (config.duration.as_secs_f64() / config.sample_interval.as_secs_f64()).floor() as u32;
    let csv_path = config.out_dir.join("soak.csv");
    let mut signal = Box::pin(interrupted());
    for k in 0..=samples {
        let at = started + config.sample_interval * k;
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = &mut signal => { interrupted_early = true; }
        }
        if interrupted_early {
            break;
        }
        if let Err(e) = cluster.check_alive() {
            died = Some(format!("{e:#}"));
            break;
        }
        let values = sample::take(cluster, &columns, &counters, &mut previous).await;
        let row = chart::Row {
            t_s: started.elapsed().as_secs_f64(),
            unix_s: unix_secs(),
            values,
        };
        if config.progress {
            eprintln!("{}", progress_line(&columns, &row));
        }
        rows.push(row);
        // Written after every sample, so a run cut short keeps its series.
        let _ = std::fs::write(&csv_path, chart::csv(&columns, &rows));
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), churn_task).await;

    let verdict = chart::verdict(&columns, &rows);
    let title = format!(
        "ballast bench soak: {:.0} min, {} samples, {} pod changes/s asked",
        started.elapsed().as_secs_f64() / 60.0,
        rows.len(),
        config.pod_churn
    );
    std::fs::write(&csv_path, chart::csv(&columns, &rows))?;
    // A run cut short before its first sample has nothing to draw; the
    // result says so rather than hiding why it stopped.
    let chart_error = crate::chart::write(
        crate::chart::ChartKind::Soak,
        std::slice::from_ref(&csv_path),
        &config.out_dir.join("soak.svg"),
        Some(&format!(
            "{title}: {}",
            if verdict.pass { "PASS" } else { "FAIL" }
        )),
    )
    .err();
    let elapsed = started.elapsed().as_secs_f64();
    let creates = counters.creates.load(Ordering::Relaxed);
    let deletes = counters.deletes.load(Ordering::Relaxed);
    let mut summary = format!(
        "{title}\n\ncluster: {}\n\nverdict: **{}**{}\n\npod creations + deletions: {creates} + {deletes} \
         in {elapsed:.0} s = {:.1}/s (asked {}); scale steps {}, Deployments recreated {}, \
         pod watch re-lists {}, churn errors {}\n\n",
        cluster.description,
        if verdict.pass { "PASS" } else { "FAIL" },
        if verdict.reasons.is_empty() {
            String::new()
        } else {
            format!(" — {}", verdict.reasons.join("; "))
        },
        (creates + deletes) as f64 / elapsed.max(1e-3),
        config.pod_churn,
        counters.scale_steps.load(Ordering::Relaxed),
        counters.recreates.load(Ordering::Relaxed),
        counters.relists.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
    );
    summary.push_str(&chart::markdown(&verdict));
    std::fs::write(config.out_dir.join("summary.md"), &summary)?;
    if config.progress {
        eprintln!("{summary}");
    }
    let mut out = serde_json::Map::new();
    out.insert("workload".into(), json!("soak"));
    out.insert("started_unix_s".into(), json!(started_unix));
    out.insert("elapsed_s".into(), json!(elapsed.round()));
    out.insert("samples".into(), json!(rows.len()));
    out.insert("pod_creates".into(), json!(creates));
    out.insert("pod_deletes".into(), json!(deletes));
    out.insert(
        "pod_changes_per_s".into(),
        json!(((creates + deletes) as f64 / elapsed.max(1e-3) * 10.0).round() / 10.0),
    );
    out.insert(
        "pod_watch_relists".into(),
        json!(counters.relists.load(Ordering::Relaxed)),
    );
    out.insert(
        "churn_errors".into(),
        json!(counters.errors.load(Ordering::Relaxed)),
    );
    out.insert(
        "churn_first_error".into(),
        json!(counters.first_error.lock().clone()),
    );
    out.insert("verdict".into(), chart::to_json(&verdict));
    out.insert(
        "out_dir".into(),
        json!(config.out_dir.display().to_string()),
    );
    if interrupted_early {
        out.insert("interrupted".into(), json!(true));
    }
    if let Some(e) = chart_error {
        out.insert("chart_error".into(), json!(format!("{e:#}")));
    }
    if let Some(died) = &died {
        out.insert("cluster_part_exited".into(), json!(died));
    }
    if let Some(died) = died {
        anyhow::bail!("{died} (series so far in {})", csv_path.display());
    }
    Ok(Value::Object(out))
}

/// `t=…s db=… rev=…/… apiserver=… events=… pods=… churn=…/s`.
fn progress_line(columns: &[sample::Column], row: &chart::Row) -> String {
    let get = |name: &str| {
        columns
            .iter()
            .position(|c| c.name == name)
            .and_then(|i| row.values[i])
    };
    let mib = |v: Option<f64>| {
        v.map(|v| format!("{:.0}MiB", v / 1048576.0))
            .unwrap_or_else(|| "?".into())
    };
    let n = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "?".into());
    format!(
        "soak t={:>6.0}s db={} rev={}/{} keys={} rss apiserver={} cm={} m1={} events={} pods={} \
         churn={}+{}/s notready={} nospace={} ({}ms)",
        row.t_s,
        mib(get("db_size_bytes")),
        n(get("revision")),
        n(get("compact_revision")),
        n(get("storage_keys")),
        mib(get("rss_apiserver_bytes")),
        mib(get("rss_controller_manager_bytes")),
        mib(get("rss_member_1_bytes")),
        n(get("cache_events")),
        n(get("cache_pods")),
        n(get("pod_creates_per_s")),
        n(get("pod_deletes_per_s")),
        n(get(sample::NOT_READY)),
        n(get(sample::NOSPACE)),
        n(get("sample_ms")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SoakConfig {
        SoakConfig {
            duration: Duration::from_secs(1800),
            sample_interval: Duration::from_secs(60),
            cluster: ClusterSource::Spawn(SpawnConfig {
                exe: PathBuf::from("ballast"),
                data_dir: None,
                nodes: 100,
                event_ttl: Duration::from_secs(300),
                compaction_interval: Duration::from_secs(300),
                keep: false,
            }),
            pod_churn: 60,
            churn_deployments: 10,
            max_replicas: 30,
            probe_replicas: 5,
            recreate_every: Duration::from_secs(20),
            out_dir: PathBuf::from("soak-results"),
            progress: false,
        }
    }

    #[test]
    fn validation_names_the_flag() {
        assert!(validate(&config()).is_ok());
        let short = SoakConfig {
            duration: Duration::from_secs(60),
            ..config()
        };
        let text = validate(&short).unwrap_err().to_string();
        assert!(
            text.contains("--duration") && text.contains("6 samples"),
            "{text}"
        );
        let fast = SoakConfig {
            sample_interval: Duration::from_millis(100),
            ..config()
        };
        assert!(validate(&fast)
            .unwrap_err()
            .to_string()
            .contains("--sample-interval"));
        let none = SoakConfig {
            pod_churn: 0,
            ..config()
        };
        assert!(validate(&none)
            .unwrap_err()
            .to_string()
            .contains("--pod-churn"));
    }

    #[tokio::test]
    async fn a_used_data_dir_is_refused_before_anything_starts() {
        let dir = std::env::temp_dir().join(format!("ballast-soak-used-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("something"), b"x").unwrap();
        let source = ClusterSource::Spawn(SpawnConfig {
            exe: PathBuf::from("/nonexistent/ballast"),
            data_dir: Some(dir.clone()),
            nodes: 1,
            event_ttl: Duration::from_secs(60),
            compaction_interval: Duration::ZERO,
            keep: false,
        });
        let err = cluster::Cluster::open(&source)
            .await
            .err()
            .expect("refused");
        assert!(dir.join("something").exists());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(format!("{err:#}").contains("not empty"), "{err:#}");
    }
}
