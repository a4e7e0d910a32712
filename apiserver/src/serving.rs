//! The connection loop: HTTP/1.1 and h2 (by preface or ALPN) on every
//! connection a listener accepts, with Kubernetes' HTTP/2 stream limit.
//!
//! axum's own `serve` fixes hyper's default of 200 concurrent streams per
//! HTTP/2 connection; kube-apiserver lets `--http2-max-streams-per-connection`
//! set it (1000 by default), and clients that multiplex many watches over
//! one connection (client-go does) need it. Each connection's writes go
//! through [`BatchedWrites`].

use std::future::Future;
use std::io;
use std::pin::pin;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use ballast_net::BatchedWrites;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tower::ServiceExt;

/// Serves `router` on every connection of `listener` until `shutdown`
/// resolves, then closes the connections gracefully (each finishes its
/// requests in flight) and returns once all are gone. `connect_info` names
/// what each request of a connection finds in its `ConnectInfo` extension.
/// `max_streams` caps concurrent HTTP/2 streams per connection (0: hyper's
/// default).
pub(crate) async fn serve<L, C>(
    mut listener: L,
    router: Router,
    connect_info: impl Fn(&BatchedWrites<L::Io>) -> C,
    max_streams: u32,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: Listener,
    C: Clone + Send + Sync + 'static,
{
    // Closed (dropped) to tell the connections to wind down.
    let (stop_tx, stop_rx) = watch::channel(());
    // Every connection holds a receiver; all dropped = all closed.
    let (gone_tx, gone_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (io, _addr) = tokio::select! {
            (io, addr) = listener.accept() => (BatchedWrites::new(io), addr),
            () = &mut shutdown => break,
        };
        let info = connect_info(&io);
        let service = router
            .clone()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(info.clone()));
                req.map(Body::new)
            });
        let mut stop = stop_rx.clone();
        let gone = gone_rx.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            if max_streams > 0 {
                builder.http2().max_concurrent_streams(max_streams);
            }
            let mut conn = pin!(builder.serve_connection_with_upgrades(
                TokioIo::new(io),
                TowerToHyperService::new(service)
            ));
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!(error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = stop.changed(), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(gone);
        });
    }
    drop(listener);
    drop(stop_tx);
    drop(gone_rx);
    gone_tx.closed().await;
    Ok(())
}
