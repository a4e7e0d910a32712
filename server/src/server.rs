//! Starting and stopping a storage member: the store, the raft node, the
//! peer listener (raft traffic, the internal service and the Cluster service
//! that membership changes are forwarded to — nothing else: etcd's peer port
//! serves no Maintenance either, so no snapshot, defragment or alarm is
//! reachable there past the client port's TLS and auth) and the client
//! listener (the etcd API, `grpc.health.v1`, `/health`, `/livez`,
//! `/readyz`, `/version`, `/metrics`), and the metrics listeners
//! (`--listen-metrics-urls`: the HTTP endpoints only). `https://` URLs are
//! served with TLS (see `tls`): the handshake first, then `AuthorityFix`
//! on the decrypted bytes, then tonic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ballast_net::BatchedWrites;
use ballast_raft::{
    grpc_service, ClusterState, GrpcTransport, GrpcTransportConfig, Member, NodeConfig,
    NodeJoinHandle, RaftNode,
};
use ballast_storage::{KvStore, RocksEngine, StoreConfig, WatchableStore};
use futures::future::{Either, MapOk};
use futures::TryFutureExt as _;
use parking_lot::RwLock;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::service::Routes;

use crate::cluster::ClusterService;
use crate::command::MemberAttributes;
use crate::config::{member_id, parse_url, ServerConfig};
use crate::error::{Result, ServerError};
use crate::h2_authority::AuthorityFix;
use crate::health::HealthService;
use crate::internal::InternalService;
use crate::kv::KvService;
use crate::lease::LeaseService;
use crate::maintenance::MaintenanceService;
use crate::node::{peer_urls, Node};
use crate::pb::ballast::server::internal_server::InternalServer;
use crate::pb::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::state_machine::{ClusterInfo, StoreMachine};
use crate::tls::{self, ServerTls, TlsInfo};
use crate::watch::WatchService;
use ballast_proto::grpc_health_v1::health_server::HealthServer;

/// gRPC framing allowance above the request limit (etcd: 512 KiB).
const GRPC_OVERHEAD: usize = 512 * 1024;

/// A running storage member.
pub struct StorageServer {
    node: Arc<Node>,
    client_addrs: Vec<SocketAddr>,
    peer_addrs: Vec<SocketAddr>,
    metrics_addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    /// What `grpc.health.v1.Health` answers: true (SERVING) until shutdown.
    serving: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    raft_done: Option<NodeJoinHandle>,
}

fn internal(e: impl std::fmt::Display) -> ServerError {
    ServerError::Internal(e.to_string())
}

/// A listening socket and, for an `https://` URL, its TLS configuration.
struct Bound {
    listener: TcpListener,
    tls: Option<ServerTls>,
}

/// Creates `dir` (and its parents) owner-only (0700), as etcd does, since
/// the WAL, the store and `auth.pb` in it are readable by anyone who can
/// enter it. An existing directory that others can enter is kept as it is,
/// with etcd's warning.
fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(internal)?;
    let mode = std::fs::metadata(dir)
        .map_err(internal)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            "check file permission: directory {:?} exist, but the permission is {:?}. \
             The recommended permission is \"-rwx------\" to prevent possible unprivileged access to the data",
            dir.display().to_string(),
            format!("{mode:o}")
        );
    }
    Ok(())
}

/// Loads one side's TLS configuration if any of its URLs is `https://`
/// (`side` is `""` or `"peer-"`). Like etcd, certificates given for plain
/// `http://` URLs are ignored with a warning.
fn side_tls(urls: &[String], info: &TlsInfo, side: &str) -> Result<Option<ServerTls>> {
    let mut https = false;
    for url in urls {
        if parse_url(url)?.0 == "https" {
            https = true;
        } else if !info.is_empty() {
            tracing::warn!(url = %url, "scheme is HTTP while key and cert files are present; ignoring key and cert files");
        } else if info.client_cert_auth {
            tracing::warn!(url = %url, "scheme is HTTP while --{side}client-cert-auth is enabled; ignoring client cert auth for this URL");
        }
    }
    if !https {
        return Ok(None);
    }
    ServerTls::load(info, side).map(Some)
}

/// Whether any of `urls` is `https://`.
fn https(urls: &[String]) -> Result<bool> {
    for url in urls {
        if parse_url(url)?.0 == "https" {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn bind(urls: &[String], tls: &Option<ServerTls>) -> Result<Vec<Bound>> {
    let mut out = Vec::new();
    for url in urls {
        let (scheme, hostport) = parse_url(url)?;
        let tls = if scheme == "https" {
            // `side_tls` loaded it for any https URL.
            Some(tls.clone().ok_or_else(|| {
                ServerError::InvalidArgument(format!(
                    "cannot listen on TLS for {hostport}: KeyFile and CertFile are not presented"
                ))
            })?)
        } else {
            None
        };
        let listener = TcpListener::bind(&hostport)
            .await
            .map_err(|e| ServerError::InvalidArgument(format!("cannot listen on {url}: {e}")))?;
        out.push(Bound { listener, tls });
    }
    Ok(out)
}

/// etcd (grpc-go) answers a request over the receive limit with
/// ResourceExhausted "grpc: received message larger than max (N vs. M)";
/// tonic answers OutOfRange. Rewrites tonic's status (trailers-only, so in
/// the headers) to etcd's, so clients see the code they handle.
fn etcd_size_limit_status(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return response;
    };
    // "Error, decoded message length too large: found {len} bytes, the limit is: {limit} bytes"
    let Some(rest) = (status.code() == tonic::Code::OutOfRange)
        .then(|| {
            status
                .message()
                .strip_prefix("Error, decoded message length too large: found ")
        })
        .flatten()
    else {
        return response;
    };
    let numbers: Vec<&str> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    if let [len, limit] = numbers[..] {
        let etcd = tonic::Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {limit})"
        ));
        let _ = etcd.add_header(headers);
    }
    response
}

type Answer = fn(Response<Body>) -> Response<Body>;
type KvFuture = <KvServer<KvService> as Service<Request<Body>>>::Future;
type RoutesFuture = <Routes as Service<Request<Body>>>::Future;

/// The client URL's service. KV requests, the hot path, go straight to the
/// KV server; the rest (the other etcd services, `/health`, `/metrics`)
/// through the router, whose matching and boxing would otherwise cost every
/// put a few percent. Every answer gets etcd's status for an oversized
/// request.
#[derive(Clone)]
struct ClientApi {
    kv: KvServer<KvService>,
    rest: Routes,
}

impl Service<Request<Body>> for ClientApi {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<MapOk<KvFuture, Answer>, MapOk<RoutesFuture, Answer>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let answer: Answer = etcd_size_limit_status;
        if request.uri().path().starts_with("/etcdserverpb.KV/") {
            Either::Left(self.kv.call(request).map_ok(answer))
        } else {
            Either::Right(self.rest.call(request).map_ok(answer))
        }
    }
}

fn serve<S>(bound: Bound, service: S, stop: watch::Receiver<bool>) -> JoinHandle<()>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    tokio::spawn(async move {
        let server = tonic::transport::Server::builder().accept_http1(true);
        let mut stop_serving = stop.clone();
        let shutdown = async move {
            let _ = stop_serving.wait_for(|s| *s).await;
        };
        // Accept etcd 3.4 clients' `:authority: http://host:port` (see
        // h2_authority); over TLS it wraps the decrypted stream. Over plain
        // TCP, a pass's responses go out in one write (see ballast_net): h2
        // alone writes each unary response with a `writev` of its own.
        let result = match bound.tls {
            Some(tls) => {
                let incoming = tls::incoming(bound.listener, tls, stop);
                server
                    .serve_with_incoming_shutdown(service, incoming, shutdown)
                    .await
            }
            None => {
                let incoming = TcpListenerStream::new(bound.listener).map(|r| {
                    r.and_then(|s| {
                        s.set_nodelay(true)?;
                        Ok(AuthorityFix::new(BatchedWrites::new(s)))
                    })
                });
                server
                    .serve_with_incoming_shutdown(service, incoming, shutdown)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!("listener failed: {e}");
        }
    })
}

impl StorageServer {
    /// Opens the member's data and starts serving. Listening addresses with
    /// port 0 get a free port; see [`client_addrs`](Self::client_addrs).
    pub async fn start(config: ServerConfig) -> Result<Self> {
        config.validate()?;
        // Certificates are checked before any data is touched.
        let client_tls = side_tls(&config.listen_client_urls, &config.client_tls, "")?;
        let peer_tls = side_tls(&config.listen_peer_urls, &config.peer_tls, "peer-")?;
        // etcd serves https metrics URLs with the client TLS files.
        let metrics_tls = match (&client_tls, https(&config.listen_metrics_urls)?) {
            (_, false) => None,
            (Some(tls), true) => Some(tls.clone()),
            (None, true) => Some(ServerTls::load(&config.client_tls, "")?),
        };
        let transport_config = GrpcTransportConfig {
            tls: tls::peer_client_tls(&config.peer_tls)?,
            ..GrpcTransportConfig::default()
        };
        let member_dir = config.data_dir.join("member");
        private_dir(&config.data_dir)?;
        private_dir(&member_dir)?;

        let engine = RocksEngine::open(member_dir.join("kv"))?;
        let store_config = StoreConfig {
            max_value_size: config.max_request_bytes,
            max_txn_ops: config.max_txn_ops,
            ..Default::default()
        };
        let store = Arc::new(WatchableStore::new(KvStore::open(
            Arc::new(engine),
            store_config,
        )?));

        let token = &config.initial_cluster_token;
        let initial = config.initial_members();
        let id = match config.initial_cluster_state {
            ClusterState::New => initial
                .iter()
                .find(|(_, name, _)| *name == config.name)
                .map(|(id, _, _)| *id)
                .ok_or_else(|| {
                    ServerError::InvalidArgument("local member not in --initial-cluster".into())
                })?,
            ClusterState::Existing => member_id(&config.initial_advertise_peer_urls, token),
        };
        let cluster_id = crate::config::cluster_id(&[member_id(&[], token)]);
        // A new cluster bootstraps from these members; a joining member only
        // learns from them where its peers are (the log tells it the rest).
        let initial_peers: Vec<Member> = initial
            .iter()
            .map(|(id, name, urls)| {
                Member::voter(
                    *id,
                    MemberAttributes {
                        id: *id,
                        name: name.clone(),
                        peer_urls: urls.clone(),
                        client_urls: vec![],
                    }
                    .encode_to_vec(),
                )
            })
            .collect();

        let heartbeat = config.heartbeat_interval;
        let mut raft_config = NodeConfig::new(id, member_dir.join("raft"));
        raft_config.initial_peers = initial_peers;
        raft_config.initial_cluster_state = config.initial_cluster_state;
        raft_config.tick_interval = heartbeat;
        raft_config.heartbeat_ticks = 1;
        raft_config.election_ticks =
            (config.election_timeout.as_millis() / heartbeat.as_millis().max(1)).max(2) as usize;
        raft_config.snapshot_count = config.snapshot_count;
        raft_config.snapshot_catch_up_entries = config
            .snapshot_catch_up_entries
            .unwrap_or(config.snapshot_count / 2)
            .max(1);

        let cluster = Arc::new(RwLock::new(ClusterInfo::default()));
        let resolver_cluster = cluster.clone();
        let transport = GrpcTransport::with_resolver(
            id,
            transport_config,
            Arc::new(move |m: &Member| peer_urls(&resolver_cluster.read(), m).into_iter().next()),
        )?;
        let machine = StoreMachine::new(
            store.clone(),
            transport.clone(),
            cluster.clone(),
            member_dir.join("cluster.pb"),
        )
        .map_err(|e| {
            ServerError::InvalidArgument(format!(
                "{e}; refusing to start without this member's users, roles and \
                 auth setting (restore the file, or remove the member's data \
                 and add it to the cluster again)"
            ))
        })?;
        let (raft, raft_done) = RaftNode::start(raft_config, machine, transport)?;

        let node = Arc::new(Node::new(
            config.clone(),
            store,
            raft,
            cluster,
            id,
            cluster_id,
        ));
        let (stop, stop_rx) = watch::channel(false);
        let (serving, serving_rx) = watch::channel(true);
        let limit = config.max_request_bytes + GRPC_OVERHEAD;
        let mut listeners = Vec::new();

        let mut peer_addrs = Vec::new();
        for bound in bind(&config.listen_peer_urls, &peer_tls).await? {
            peer_addrs.push(bound.listener.local_addr().map_err(internal)?);
            let routes = Routes::new(grpc_service(node.raft.inbox()))
                .add_service(
                    InternalServer::new(InternalService::new(node.clone()))
                        .max_decoding_message_size(limit)
                        .max_encoding_message_size(usize::MAX),
                )
                .add_service(ClusterServer::new(ClusterService::new(node.clone())));
            listeners.push(serve(bound, routes.prepare(), stop_rx.clone()));
        }

        if config.initial_corrupt_check {
            // Peers reach this member's hash on the peer URL, already served.
            if let Err(e) = node.check_initial_hash().await {
                let _ = stop.send(true);
                return Err(e);
            }
        }

        let grpc_metrics = crate::metrics::GrpcMetrics::new();
        let registry = Arc::new(crate::metrics::registry(node.clone(), &grpc_metrics));
        let mut client_addrs = Vec::new();
        // One for all client URLs: it holds the member's Authenticate cap.
        let auth_service = crate::auth::AuthService::new(node.clone());
        for bound in bind(&config.listen_client_urls, &client_tls).await? {
            client_addrs.push(bound.listener.local_addr().map_err(internal)?);
            let kv = KvServer::new(KvService::new(node.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX);
            let routes = Routes::new(
                WatchServer::new(WatchService::new(node.clone()))
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(LeaseServer::new(LeaseService::new(node.clone())))
            .add_service(crate::pb::etcdserverpb::auth_server::AuthServer::new(
                auth_service.clone(),
            ))
            .add_service(ClusterServer::new(ClusterService::new(node.clone())))
            .add_service(
                MaintenanceServer::new(MaintenanceService::new(node.clone()))
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(HealthServer::new(HealthService::new(serving_rx.clone())));
            let router = crate::http::routes(routes.into_axum_router(), node.clone(), &registry);
            let api = ClientApi {
                kv,
                rest: Routes::from(router).prepare(),
            };
            let api = crate::metrics::Metered::new(api, grpc_metrics.clone());
            listeners.push(serve(bound, api, stop_rx.clone()));
        }

        // `--listen-metrics-urls`: `/metrics` and the health endpoints only.
        let mut metrics_addrs = Vec::new();
        for bound in bind(&config.listen_metrics_urls, &metrics_tls).await? {
            metrics_addrs.push(bound.listener.local_addr().map_err(internal)?);
            let router = crate::http::routes(axum::Router::new(), node.clone(), &registry);
            listeners.push(serve(
                bound,
                Routes::from(router).prepare(),
                stop_rx.clone(),
            ));
        }

        node.spawn_background();
        tracing::info!(name = %config.name, id = format!("{id:x}"), ?client_addrs, ?peer_addrs, ?metrics_addrs, "storage member started");
        Ok(StorageServer {
            node,
            client_addrs,
            peer_addrs,
            metrics_addrs,
            stop,
            serving,
            listeners,
            raft_done: Some(raft_done),
        })
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Where the etcd API is served (actual ports).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// Where raft and the internal service are served (actual ports).
    pub fn peer_addrs(&self) -> &[SocketAddr] {
        &self.peer_addrs
    }

    /// Where `--listen-metrics-urls` are served (actual ports).
    pub fn metrics_addrs(&self) -> &[SocketAddr] {
        &self.metrics_addrs
    }

    /// Stops gracefully: the gRPC health service turns NOT_SERVING, a
    /// leader hands leadership to another voter, then the listeners close
    /// and the raft node stops.
    pub async fn shutdown(mut self) {
        let _ = self.serving.send(false);
        let node = &self.node;
        if node.is_leader() {
            let other = node
                .raft
                .members()
                .into_iter()
                .find(|m| m.id != node.member_id && !m.is_learner);
            if let Some(m) = other {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), node.raft.transfer_leader(m.id))
                        .await;
            }
        }
        let _ = self.stop.send(true);
        for l in self.listeners.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), l).await;
        }
        node.raft.shutdown().await;
        if let Some(done) = self.raft_done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
        }
    }

    /// Waits until the raft node stops on its own (e.g. removed from the cluster).
    pub async fn stopped(&mut self) -> Result<()> {
        match self.raft_done.take() {
            Some(done) => done.await.map_err(ServerError::from),
            None => Ok(()),
        }
    }
}
