//! # ballast-kubelet
//!
//! The node agent: registers Nodes, renews their Leases, watches the pods
//! bound to them and runs each through the Kubernetes pod lifecycle, with
//! real processes or simulated containers.
//!
//! ```no_run
//! # async fn example(client: kube::Client) -> anyhow::Result<()> {
//! use ballast_kubelet::{Kubelet, KubeletConfig};
//! let config = KubeletConfig::new("node-1", std::env::current_exe()?);
//! let kubelet = Kubelet::start(client, config).await?;
//! println!("kubelet API on 127.0.0.1:{}", kubelet.port());
//! kubelet.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `config` — [`KubeletConfig`], [`RuntimeKind`].
//! - `kubelet` — [`Kubelet::start`]/[`Kubelet::run`], [`KubeletHandle`]: the
//!   HTTP server, node registration and the pod watch feeding the workers.
//! - `node` — the Node object (capacity, addresses, conditions, daemon
//!   endpoint) and the node Lease.
//! - `worker` — pod workers: image pulls, init containers, hooks, probes,
//!   restarts with back-off, termination; `worker::state` turns what a
//!   worker knows into a PodStatus (phase, conditions, container states).
//! - `runtime` — the runtimes behind the workers: [`runtime::process`]
//!   (process groups, sandboxes, the container shim, adoption after a
//!   restart) with [`runtime::netns`] (per-pod network, UTS and IPC
//!   namespaces) and [`runtime::sim`] (timers; behaviour from annotations).
//! - [`images`] — the process runtime's image catalogue and the built-in
//!   programs (`ballast image httpd`, `ballast image shim`).
//! - `probe` — httpGet and tcpSocket probes and hooks.
//! - [`dns`] — each pod's resolv.conf (by `dnsPolicy`, `dnsConfig`,
//!   `--cluster-dns`) and managed `/etc/hosts`, bound over the container's
//!   own with mount namespaces.
//! - `env` — container environment, downward API and `$(VAR)` expansion.
//! - `volumes` — pod volumes under the pod's directory (emptyDir, configMap,
//!   secret, downwardAPI, projected, hostPath), kept current; mounted by
//!   [`runtime::mounts`] in each container's own mount namespace.
//! - `logs` — the CRI log format; `server` — `/containerLogs` and `/healthz`.
//! - `exec` — `/exec` and `/attach`: Kubernetes' WebSocket channel
//!   protocols, commands in a container's context, terminals.
//! - `portforward` — `/portForward`: connections to a pod's ports over
//!   the WebSocket port-forward protocol, or kube's port-forward streams
//!   over SPDY/3.1 (kubectl; plain or tunnelled in a WebSocket);
//!   `spdy` — SPDY/3.1 frames and their zlib header blocks.
//! - `auth` — who may use that API: client certificates, anonymous
//!   requests, SubjectAccessReviews on `nodes/proxy`, `nodes/log`, …;
//!   `tls` — serving it over TLS.
//! - `ipam` — pod IPs from the node's CIDR inside 127.0.0.0/8.
//! - [`cgroups`] — resource limits through cgroups (v1 or v2), QoS classes.

mod auth;
pub mod cgroups;
mod config;
pub mod dns;
mod env;
mod exec;
pub mod images;
mod ipam;
mod kubelet;
mod logs;
mod node;
mod portforward;
mod probe;
pub mod runtime;
mod server;
mod spdy;
mod tls;
mod volumes;
mod worker;

pub use auth::{ApiSecurity, AuthorizationMode};
pub use config::{KubeletConfig, RuntimeKind};
pub use images::run_program;
pub use kubelet::{Kubelet, KubeletHandle};
pub use node::LEASE_NAMESPACE;

/// The HTTP API's router, for the fuzz targets.
#[doc(hidden)]
pub use server::fuzz_api as server_fuzz_api;
