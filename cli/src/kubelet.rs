//! `ballast kubelet`: the node agent (owned by the kubelet work of issue 6).

use clap::Args;

use crate::kube_client::ClientArgs;

#[derive(Args)]
pub struct KubeletArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: KubeletArgs) -> anyhow::Result<()> {
    let _client = args.client.client().await?;
    anyhow::bail!("ballast kubelet is being built (issue 6)")
}
