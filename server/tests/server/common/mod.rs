//! A one-member storage cluster on 127.0.0.1, in process, for the server's tests.
#![allow(dead_code)]

use std::time::Duration;

use ballast_server::{ServerConfig, StorageServer};

/// Starts a member (client port chosen by the OS), tuned by `tune`, and
/// waits (bounded) until it leads.
pub async fn start_member(
    tune: impl FnOnce(&mut ServerConfig),
) -> (StorageServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let peer = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut config = ServerConfig::new("solo", dir.path());
    config.listen_client_urls = vec!["http://127.0.0.1:0".into()];
    config.advertise_client_urls = vec!["http://127.0.0.1:0".into()];
    config.listen_peer_urls = vec![peer.clone()];
    config.initial_advertise_peer_urls = vec![peer.clone()];
    config.initial_cluster = vec![("solo".into(), peer)];
    tune(&mut config);
    let server = StorageServer::start(config).await.unwrap();
    for _ in 0..100 {
        if server.node().is_leader() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.node().is_leader(), "the only member never led");
    (server, dir)
}

/// A client channel to the member's first client URL.
pub async fn channel(server: &StorageServer) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{}", server.client_addrs()[0]))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `msg` with etcd's `token` metadata, as an authenticated client sends it.
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("token", token.parse().unwrap());
    r
}

/// Authenticates `name` and returns its simple token.
pub async fn login(
    ch: &tonic::transport::Channel,
    name: &str,
    password: &str,
) -> Result<String, tonic::Status> {
    use ballast_server::pb::etcdserverpb::{auth_client::AuthClient, AuthenticateRequest};
    Ok(AuthClient::new(ch.clone())
        .authenticate(AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await?
        .into_inner()
        .token)
}
