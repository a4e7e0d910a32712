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

/// `ballast image <name>`: the programs behind the process runtime's
/// built-in images (hidden; the kubelet runs them as containers).
#[derive(Args)]
pub struct ImageArgs {
    /// The image program to run.
    name: String,
    /// Its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub async fn image(args: ImageArgs) -> anyhow::Result<()> {
    anyhow::bail!("image {} {:?}: being built (issue 6)", args.name, args.args)
}
