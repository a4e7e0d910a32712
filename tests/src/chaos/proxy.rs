//! A userspace TCP proxy in front of each member's peer port, standing in
//! for `tc netem` (this kernel has no `sch_netem`, and no iptables/nft).
//!
//! Member `i` listens for peers on an internal port and advertises the
//! proxy's port, so every raft connection *to* member `i` crosses proxy `i`
//! (inside member `i`'s namespace). A [`LinkFault`] applies to every
//! connection of the proxy or only to those coming from one peer address.
//!
//! The approximation, honestly: the proxy works on the byte stream, not on
//! packets. `Delay` holds each chunk read from a socket for a random time
//! before writing it on (chunks stay in order, and later chunks do not wait
//! for earlier delays beyond keeping the order, so latency is added without
//! collapsing throughput). `Loss` cannot drop bytes from a TCP stream
//! without corrupting it, so a lost packet is modelled as what TCP makes of
//! it — a stall of a few hundred milliseconds (a retransmission timeout) —
//! and, rarely, as a connection reset, which the peer transport must
//! survive by reconnecting.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::net;
use super::rng::Rng;

/// What the proxy does to the bytes it forwards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkFault {
    /// Forward at once.
    None,
    /// Hold each chunk for a uniform random time in `min..=max` ms.
    Delay { min_ms: u64, max_ms: u64 },
    /// Per chunk: stall 200–1000 ms with probability `stall`, reset the
    /// connection with probability `reset`.
    Loss { stall: f64, reset: f64 },
}

#[derive(Debug)]
struct Shared {
    /// The fault, and the peer address it is limited to (`None`: all).
    fault: Mutex<(LinkFault, Option<Ipv4Addr>)>,
    connections: AtomicU64,
    stalls: AtomicU64,
    resets: AtomicU64,
}

/// One running proxy; dropping it stops its thread and closes its sockets.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Counters of what a proxy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub connections: u64,
    pub stalls: u64,
    pub resets: u64,
}

impl Proxy {
    /// Starts a proxy in namespace `ns`, listening on `listen` and
    /// forwarding to `target`; `seed` drives its random choices.
    pub fn start(ns: &str, listen: SocketAddr, target: SocketAddr, seed: u64) -> io::Result<Proxy> {
        let shared = Arc::new(Shared {
            fault: Mutex::new((LinkFault::None, None)),
            connections: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let ns = ns.to_string();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("chaos-proxy-{listen}"))
            .spawn(move || {
                let setup = net::enter(&ns).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                });
                let rt = match setup {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::bind(listen).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let mut rng = Rng::new(seed);
                    let accept = async {
                        loop {
                            let Ok((conn, from)) = listener.accept().await else {
                                continue;
                            };
                            let from = match from {
                                SocketAddr::V4(a) => Some(*a.ip()),
                                SocketAddr::V6(_) => None,
                            };
                            sh.connections.fetch_add(1, Ordering::Relaxed);
                            let salt = rng.next_u64();
                            let conn_rng = rng.fork(salt);
                            tokio::spawn(relay(conn, from, target, sh.clone(), conn_rng));
                        }
                    };
                    tokio::select! {
                        () = accept => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime cancels every relay task.
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("proxy thread died during setup"))??;
        Ok(Proxy {
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Sets the fault for every connection (`only_from: None`) or only for
    /// connections from one peer address.
    pub fn set(&self, fault: LinkFault, only_from: Option<Ipv4Addr>) {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = (fault, only_from);
    }

    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            connections: self.shared.connections.load(Ordering::Relaxed),
            stalls: self.shared.stalls.load(Ordering::Relaxed),
            resets: self.shared.resets.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn relay(
    inbound: TcpStream,
    from: Option<Ipv4Addr>,
    target: SocketAddr,
    shared: Arc<Shared>,
    rng: Rng,
) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (ir, iw) = inbound.into_split();
    let (or, ow) = outbound.into_split();
    let up = pump(ir, ow, from, shared.clone(), rng.fork(1));
    let down = pump(or, iw, from, shared, rng.fork(2));
    // Whichever direction ends first (EOF, error, injected reset) closes both.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Copies `r` to `w` through a queue of (release time, chunk), applying the
/// current fault to each chunk as it is read.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    from: Option<Ipv4Addr>,
    shared: Arc<Shared>,
    mut rng: Rng,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // Returns whether the connection is to be reset (not drained).
    let reader = async move {
        let mut last = Instant::now();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            let (fault, only) = *shared.fault.lock().unwrap_or_else(|e| e.into_inner());
            let applies = only.is_none() || only == from;
            let mut hold = Duration::ZERO;
            if applies {
                match fault {
                    LinkFault::None => {}
                    LinkFault::Delay { min_ms, max_ms } => {
                        hold = Duration::from_millis(rng.range(min_ms, max_ms));
                    }
                    LinkFault::Loss { stall, reset } => {
                        if rng.chance(reset) {
                            shared.resets.fetch_add(1, Ordering::Relaxed);
                            return true;
                        }
                        if rng.chance(stall) {
                            shared.stalls.fetch_add(1, Ordering::Relaxed);
                            hold = Duration::from_millis(rng.range(200, 1000));
                        }
                    }
                }
            }
            // Keep the byte order: never release before the previous chunk.
            last = last.max(Instant::now() + hold);
            if tx.send((last, buf[..n].to_vec())).is_err() {
                return true;
            }
        }
    };
    let mut writer = std::pin::pin!(writer);
    let reset = tokio::select! {
        reset = reader => reset,
        () = &mut writer => return,
    };
    // On EOF the reader has dropped `tx`: let the writer drain the queue.
    if !reset {
        writer.await;
    }
}
