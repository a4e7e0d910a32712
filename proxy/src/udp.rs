//! A UDP frontend: each client address is a flow with its own connected
//! socket to the endpoint the balancer picked for its first datagram;
//! replies go back to the client from the frontend's address. A flow with
//! no datagram either way for `idle_timeout` ends; at most `max_flows` are
//! open at once (datagrams of new clients beyond that are dropped, as a
//! full conntrack table drops them).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::net::UdpSocket;

use crate::balancer::Balancer;
use crate::metrics::Stats;

/// The largest datagram forwarded.
const MAX_DATAGRAM: usize = 65_535;

/// One client's flow: its socket to the endpoint and its last activity
/// (milliseconds since the frontend started, shared with the reply task).
struct Flow {
    upstream: Arc<UdpSocket>,
    last_active: Arc<AtomicU64>,
}

/// Flow limits of one frontend.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub max_flows: usize,
}

/// Relays datagrams on `socket` until the task is dropped.
pub async fn serve(socket: UdpSocket, balancer: Arc<Balancer>, limits: Limits, stats: Arc<Stats>) {
    let socket = Arc::new(socket);
    let started = Instant::now();
    let flows: Arc<Mutex<HashMap<SocketAddr, Flow>>> = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        let now_ms = started.elapsed().as_millis() as u64;
        let existing = flows
            .lock()
            .get(&client)
            .map(|f| (f.upstream.clone(), f.last_active.clone()));
        let upstream = match existing {
            Some((upstream, last_active)) => {
                last_active.store(now_ms, Ordering::Relaxed);
                upstream
            }
            None => {
                if flows.lock().len() >= limits.max_flows {
                    continue;
                }
                let Some(endpoint) = balancer.pick(client.ip(), Instant::now()) else {
                    continue;
                };
                let upstream = match connect(endpoint).await {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        tracing::debug!(%endpoint, error = %e, "udp flow not opened");
                        stats.dial_failure();
                        continue;
                    }
                };
                stats.connection();
                let last_active = Arc::new(AtomicU64::new(now_ms));
                flows.lock().insert(
                    client,
                    Flow {
                        upstream: upstream.clone(),
                        last_active: last_active.clone(),
                    },
                );
                tokio::spawn(replies(
                    socket.clone(),
                    upstream.clone(),
                    client,
                    last_active,
                    started,
                    limits.idle_timeout,
                    flows.clone(),
                ));
                upstream
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

async fn connect(endpoint: SocketAddr) -> std::io::Result<UdpSocket> {
    let any = match endpoint.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    socket.connect(endpoint).await?;
    Ok(socket)
}

/// Sends the endpoint's datagrams back to `client` until the flow has been
/// idle for `idle_timeout`, then removes it.
async fn replies(
    frontend: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    last_active: Arc<AtomicU64>,
    started: Instant,
    idle_timeout: Duration,
    flows: Arc<Mutex<HashMap<SocketAddr, Flow>>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let idle_since = Duration::from_millis(last_active.load(Ordering::Relaxed));
        let deadline = started + idle_since + idle_timeout;
        match tokio::time::timeout_at(deadline.into(), upstream.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                last_active.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                let _ = frontend.send_to(&buf[..n], client).await;
            }
            // The endpoint refused (ICMP unreachable): the flow is over.
            Ok(Err(_)) => break,
            Err(_) => {
                let idle_since = Duration::from_millis(last_active.load(Ordering::Relaxed));
                if started + idle_since + idle_timeout <= Instant::now() {
                    break;
                }
            }
        }
    }
    flows.lock().remove(&client);
}
