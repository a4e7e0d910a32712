//! The connection loop: HTTP/1.1 and h2 (by preface or ALPN) on every
//! connection a listener accepts, with Kubernetes' HTTP/2 stream limit and
//! a bound on how long a client may take to send a request head.
//!
//! axum's own `serve` fixes hyper's default of 200 concurrent streams per
//! HTTP/2 connection; kube-apiserver lets `--http2-max-streams-per-connection`
//! set it (1000 by default), and clients that multiplex many watches over
//! one connection (client-go does) need it. Each connection's writes go
//! through [`BatchedWrites`].
//!
//! Slow clients (slowloris): kube-apiserver's server has
//! `ReadHeaderTimeout: 32s`. Here every HTTP/1.1 request head must arrive
//! within [`ConnLimits::header_read_timeout`] of the server starting to
//! wait for it (hyper's `header_read_timeout`; an idle keep-alive
//! connection is closed after the same time), and every connection must
//! deliver its first request (HTTP/1.1 or h2, preface included) within it,
//! else it is closed — a client that connects and sends nothing, half a
//! preface or half a head holds nothing for long.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use ballast_net::BatchedWrites;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tower::ServiceExt;

/// What each connection is allowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// Concurrent HTTP/2 streams per connection (0: hyper's default).
    pub max_streams: u32,
    /// How long a request head (and a connection's first request) may take
    /// to arrive; zero: unbounded.
    pub header_read_timeout: Duration,
}

/// Serves `router` on every connection of `listener` until `shutdown`
/// resolves, then closes the connections gracefully (each finishes its
/// requests in flight) and returns once all are gone. `connect_info` names
/// what each request of a connection finds in its `ConnectInfo` extension.
pub(crate) async fn serve<L, C>(
    mut listener: L,
    router: Router,
    connect_info: impl Fn(&BatchedWrites<L::Io>) -> C,
    limits: ConnLimits,
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
        // Set by the connection's first request, once its head is read.
        let served = Arc::new(AtomicBool::new(false));
        let first = served.clone();
        let service = router
            .clone()
            .map_request(move |mut req: Request<Incoming>| {
                first.store(true, Ordering::Relaxed);
                req.extensions_mut().insert(ConnectInfo(info.clone()));
                req.map(Body::new)
            });
        let mut stop = stop_rx.clone();
        let gone = gone_rx.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            if limits.max_streams > 0 {
                builder.http2().max_concurrent_streams(limits.max_streams);
            }
            let header_timeout = limits.header_read_timeout;
            let bounded = !header_timeout.is_zero();
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(bounded.then_some(header_timeout));
            let mut conn = pin!(builder.serve_connection_with_upgrades(
                TokioIo::new(io),
                TowerToHyperService::new(service)
            ));
            let first_deadline = tokio::time::sleep(header_timeout);
            let mut first_deadline = pin!(first_deadline);
            let mut awaiting_first = bounded;
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
                    () = first_deadline.as_mut(), if awaiting_first => {
                        awaiting_first = false;
                        if !served.load(Ordering::Relaxed) {
                            tracing::debug!("no request within the header read timeout: closed");
                            break;
                        }
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
