//! Which endpoint a new connection or UDP flow goes to: round robin over
//! the endpoints in use, or, with `sessionAffinity: ClientIP`, the endpoint
//! the client's address was last sent to while that was less than
//! `timeoutSeconds` ago (kube-proxy's `recent` match, per service port).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

/// Client addresses remembered per service port, at most: expired ones
/// are swept when the table reaches this size.
const STICKY_SWEEP_AT: usize = 16_384;

/// The endpoints one frontend forwards to, already filtered by readiness
/// and traffic policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Endpoint addresses, in a stable order.
    pub addrs: Vec<SocketAddr>,
    /// `sessionAffinity: ClientIP` with its timeout, or `None`.
    pub affinity: Option<Duration>,
}

/// Picks endpoints for one frontend; updated in place as the Service and
/// its EndpointSlices change, so the listener keeps running.
#[derive(Debug, Default)]
pub struct Balancer {
    /// Swapped whole on update: a pick sees one consistent list.
    endpoints: RwLock<Arc<Endpoints>>,
    next: AtomicUsize,
    /// Client address → (endpoint, last use), for ClientIP affinity.
    sticky: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
}

impl Balancer {
    /// A balancer over `endpoints`.
    pub fn new(endpoints: Endpoints) -> Self {
        Balancer {
            endpoints: RwLock::new(Arc::new(endpoints)),
            ..Balancer::default()
        }
    }

    /// Replaces the endpoints; affinities to endpoints that are gone lapse
    /// at their next use.
    pub fn update(&self, endpoints: Endpoints) {
        if endpoints.affinity.is_none() {
            self.sticky.lock().clear();
        }
        *self.endpoints.write() = Arc::new(endpoints);
    }

    /// The endpoints in use.
    pub fn endpoints(&self) -> Arc<Endpoints> {
        self.endpoints.read().clone()
    }

    /// The endpoint for a new connection from `client` at `now`; `None`
    /// when there is none.
    pub fn pick(&self, client: IpAddr, now: Instant) -> Option<SocketAddr> {
        let endpoints = self.endpoints();
        if endpoints.addrs.is_empty() {
            return None;
        }
        let Some(timeout) = endpoints.affinity else {
            return Some(self.round_robin(&endpoints));
        };
        let mut sticky = self.sticky.lock();
        if let Some((addr, last)) = sticky.get_mut(&client) {
            if now.saturating_duration_since(*last) <= timeout && endpoints.addrs.contains(addr) {
                *last = now;
                return Some(*addr);
            }
        }
        if sticky.len() >= STICKY_SWEEP_AT {
            sticky.retain(|_, (_, last)| now.saturating_duration_since(*last) <= timeout);
        }
        let addr = self.round_robin(&endpoints);
        // Past the bound with every entry still live, a new client goes
        // without affinity rather than growing the map.
        if sticky.len() < STICKY_SWEEP_AT || sticky.contains_key(&client) {
            sticky.insert(client, (addr, now));
        }
        Some(addr)
    }

    /// Forgets `client`'s affinity (its endpoint refused a connection).
    pub fn forget(&self, client: IpAddr) {
        self.sticky.lock().remove(&client);
    }

    fn round_robin(&self, endpoints: &Endpoints) -> SocketAddr {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        endpoints.addrs[i % endpoints.addrs.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 80))
    }

    fn client(last: u8) -> IpAddr {
        IpAddr::from([127, 1, 0, last])
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        let b = Balancer::new(Endpoints {
            addrs: vec![addr(1), addr(2), addr(3)],
            affinity: None,
        });
        let now = Instant::now();
        let picks: Vec<_> = (0..6).map(|_| b.pick(client(1), now).unwrap()).collect();
        assert_eq!(
            picks,
            [addr(1), addr(2), addr(3), addr(1), addr(2), addr(3)]
        );
        b.update(Endpoints::default());
        assert_eq!(b.pick(client(1), now), None);
    }

    #[test]
    fn client_ip_affinity_pins_until_timeout_or_endpoint_loss() {
        let b = Balancer::new(Endpoints {
            addrs: vec![addr(1), addr(2)],
            affinity: Some(Duration::from_secs(10)),
        });
        let t0 = Instant::now();
        let first = b.pick(client(1), t0).unwrap();
        let other = b.pick(client(2), t0).unwrap();
        assert_ne!(first, other, "a new client takes the next endpoint");
        for s in 1..=5 {
            let at = t0 + Duration::from_secs(s * 2);
            assert_eq!(b.pick(client(1), at), Some(first), "each use renews");
        }
        // Idle longer than the timeout: a fresh round-robin choice.
        let late = t0 + Duration::from_secs(30);
        let again = b.pick(client(1), late).unwrap();
        assert_eq!(b.pick(client(1), late), Some(again));
        // The pinned endpoint goes away: the client moves.
        let remaining = if again == addr(1) { addr(2) } else { addr(1) };
        b.update(Endpoints {
            addrs: vec![remaining],
            affinity: Some(Duration::from_secs(10)),
        });
        assert_eq!(b.pick(client(1), late), Some(remaining));
        b.forget(client(1));
        assert_eq!(b.pick(client(1), late), Some(remaining));
    }
}
