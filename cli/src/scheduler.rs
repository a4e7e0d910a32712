//! `ballast scheduler` (owned by the scheduler work of issue 6).

use clap::Args;

use crate::kube_client::ClientArgs;

#[derive(Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let _client = args.client.client().await?;
    anyhow::bail!("ballast scheduler is being built (issue 6)")
}
