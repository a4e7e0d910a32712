//! `ballast controller-manager` (owned by the controllers work of issue 6).

use clap::Args;

use crate::kube_client::ClientArgs;

#[derive(Args)]
pub struct ControllerManagerArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: ControllerManagerArgs) -> anyhow::Result<()> {
    let _client = args.client.client().await?;
    anyhow::bail!("ballast controller-manager is being built (issue 6)")
}
