//! A TCP frontend: accepts connections and splices each to an endpoint the
//! balancer picks. A refused or timed-out dial moves on to the next
//! endpoint; when every endpoint failed, the client's connection is reset.
//! At most `max_connections` are forwarded at once; more wait in the
//! listen backlog. Dropping the accept task closes the listener, and the
//! connections already spliced run on until either side closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::balancer::Balancer;
use crate::metrics::Stats;

/// How long a dial to one endpoint may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    balancer: Arc<Balancer>,
    max_connections: usize,
    stats: Arc<Stats>,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let balancer = balancer.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            forward(client, peer, &balancer, &stats).await;
            drop(permit);
        });
    }
}

async fn forward(mut client: TcpStream, peer: SocketAddr, balancer: &Balancer, stats: &Stats) {
    let attempts = balancer.endpoints().addrs.len().max(1);
    for _ in 0..attempts {
        let Some(endpoint) = balancer.pick(peer.ip(), Instant::now()) else {
            break;
        };
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(endpoint)).await {
            Ok(Ok(mut upstream)) => {
                stats.connection();
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return;
            }
            Ok(Err(e)) => tracing::debug!(%endpoint, error = %e, "dial failed"),
            Err(_) => tracing::debug!(%endpoint, "dial timed out"),
        }
        stats.dial_failure();
        balancer.forget(peer.ip());
    }
    // No endpoint took it: reset, as a REJECT with tcp-reset would.
    let _ = client.set_zero_linger();
}
