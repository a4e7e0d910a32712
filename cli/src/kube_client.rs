//! How the components (controller manager, scheduler, kubelet) find the
//! apiserver: kube's own flags, `--kubeconfig` or `--master`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// `--kubeconfig PATH` or `--master URL`; with neither, kube's defaults
/// (`$KUBECONFIG`, `~/.kube/config`).
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Path to a kubeconfig file.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The apiserver's URL; overrides the kubeconfig's server.
    #[arg(long)]
    pub master: Option<String>,
}

impl ClientArgs {
    /// The client configuration these flags describe.
    pub async fn config(&self) -> anyhow::Result<kube::Config> {
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
            }
            None if self.master.is_some() => {
                kube::Config::new("http://127.0.0.1:8080".parse().expect("a valid URL"))
            }
            None => kube::Config::infer().await?,
        };
        if let Some(master) = &self.master {
            config.cluster_url = master
                .parse()
                .with_context(|| format!("--master {master}: not a URL"))?;
        }
        Ok(config)
    }

    /// A client for the apiserver these flags point at.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.config().await?)?)
    }
}
