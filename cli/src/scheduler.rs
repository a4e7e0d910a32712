//! `ballast scheduler`: binds pending pods to nodes until SIGINT/SIGTERM,
//! with kube-scheduler's `--kubeconfig`/`--master` and a `--scheduler-name`.

use std::time::Duration;

use ballast_controllers::scheduler::{
    Scheduler, SchedulerConfig, DEFAULT_MAX_BINDS_IN_FLIGHT, DEFAULT_SCHEDULER_NAME,
};
use clap::Args;

use crate::kube_client::ClientArgs;

#[derive(Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    status: crate::status_port::StatusPortArgs,
    /// Schedule the pods whose spec.schedulerName is this.
    #[arg(long, default_value = DEFAULT_SCHEDULER_NAME)]
    scheduler_name: String,
    /// Binding requests in flight at once.
    #[arg(long, default_value_t = DEFAULT_MAX_BINDS_IN_FLIGHT as u16, value_parser = clap::value_parser!(u16).range(1..))]
    max_binds_in_flight: u16,
    /// Seconds an unschedulable pod waits at most before it is retried
    /// (it is retried sooner when nodes or pods change).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    unschedulable_retry_seconds: u64,
    /// Do not write Scheduled/FailedScheduling events.
    #[arg(long)]
    no_events: bool,
}

pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let client = args.client.client().await?;
    let config = SchedulerConfig {
        scheduler_name: args.scheduler_name,
        max_binds_in_flight: usize::from(args.max_binds_in_flight),
        unschedulable_retry: Duration::from_secs(args.unschedulable_retry_seconds),
        events: !args.no_events,
        ..SchedulerConfig::default()
    };
    tracing::info!(scheduler_name = %config.scheduler_name, "scheduler starting");
    let profile = config.scheduler_name.clone();
    let scheduler = Scheduler::new(client, config);
    let stats = scheduler.stats();
    let mut registry = ballast_metrics::new_registry();
    stats.register(&mut registry, &profile);
    let port = crate::status_port::SCHEDULER_PORT;
    args.status.serve(port, registry).await?;
    scheduler.run(crate::shutdown_signal()).await;
    tracing::info!(bound = stats.bound(), "scheduler stopped");
    Ok(())
}
