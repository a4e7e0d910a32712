//! Names outside the cluster, forwarded: what CoreDNS's default Corefile
//! does with `forward . /etc/resolv.conf`.
//!
//! A query the cluster zone does not answer (another domain, or the reverse
//! name of an address no Service or pod has) is sent on to the upstream
//! servers, in order, over the protocol the client used (a truncated UDP
//! answer makes the client retry over TCP, and that retry is forwarded over
//! TCP). Each upstream gets [`TIMEOUT`]; when none answers the client gets
//! SERVFAIL. The upstream sees a fresh message id, and its answer is
//! accepted only from the address asked with that id; the client gets it
//! back under its own id. At most [`MAX_CONCURRENT`] forwards are in flight
//! (CoreDNS's `max_concurrent`); past that the answer is REFUSED, as
//! CoreDNS's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// How long one upstream may take to answer (CoreDNS's read timeout).
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Forwards in flight at once (CoreDNS's `max_concurrent` default).
pub const MAX_CONCURRENT: usize = 1000;
/// The largest EDNS payload a forwarded UDP query offers the upstream (the
/// DNS flag day 2020 size, as the server answers its own clients): a larger
/// answer comes truncated, and the client retries over TCP.
const UDP_PAYLOAD: u16 = 1232;
/// The buffer a UDP answer is read into: above [`UDP_PAYLOAD`], so the
/// in-flight forwards hold at most a few MiB between them.
const UDP_BUFFER: usize = 4096;

/// The upstream servers and the bound on forwards in flight.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Arc<[SocketAddr]>,
    slots: Arc<Semaphore>,
}

/// The upstreams a resolv.conf names (`nameserver` lines, port 53), in its
/// order, without `own` (the cluster DNS itself: forwarding to it would
/// loop).
pub fn upstreams_of_resolv_conf(text: &str, own: SocketAddr) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            words.next()?.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|a| *a != own)
        .collect()
}

impl Forwarder {
    /// Forwards to `upstreams`, in order; `None` when there are none.
    pub fn new(upstreams: Vec<SocketAddr>) -> Option<Forwarder> {
        (!upstreams.is_empty()).then(|| Forwarder {
            upstreams: upstreams.into(),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        })
    }

    /// The upstreams, in the order they are asked.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The upstreams' answer to `query` (asked over TCP when `tcp`), under
    /// the query's id: the first upstream's that answers in time, else
    /// SERVFAIL; REFUSED when [`MAX_CONCURRENT`] forwards are in flight.
    pub async fn forward(&self, query: &Message, tcp: bool) -> Message {
        let Ok(_slot) = self.slots.try_acquire() else {
            return failure(query, ResponseCode::Refused);
        };
        let mut ask = query.clone();
        ask.metadata.id = rand::random();
        if let Some(edns) = ask.edns.as_mut() {
            edns.set_max_payload(edns.max_payload().min(UDP_PAYLOAD));
        }
        let Ok(bytes) = ask.to_vec() else {
            return failure(query, ResponseCode::FormErr);
        };
        for &upstream in self.upstreams.iter() {
            let answer = if tcp {
                tokio::time::timeout(TIMEOUT, over_tcp(upstream, &bytes)).await
            } else {
                tokio::time::timeout(TIMEOUT, over_udp(upstream, &bytes, ask.metadata.id)).await
            };
            match answer {
                Ok(Ok(mut reply)) if reply.metadata.id == ask.metadata.id => {
                    reply.metadata.id = query.metadata.id;
                    return reply;
                }
                Ok(Ok(_)) => tracing::debug!(%upstream, "upstream answered another id"),
                Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "forwarding failed"),
                Err(_) => tracing::debug!(%upstream, "upstream did not answer in time"),
            }
        }
        failure(query, ResponseCode::ServFail)
    }
}

/// An answer of `code` to `query` with no records, recursion available (a
/// forwarding server offers it).
fn failure(query: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = code;
    reply.add_queries(query.queries.iter().cloned());
    reply
}

fn decode(bytes: &[u8]) -> std::io::Result<Message> {
    Message::from_vec(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// Sends `query` over UDP from a fresh socket (a random source port) and
/// waits for the answer with `id` from `upstream`.
async fn over_udp(upstream: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Spoofed or stale datagrams (another id, or not even a message)
        // are ignored; the caller's timeout bounds the wait.
        match decode(&buf[..n]) {
            Ok(m) if m.metadata.id == id => return Ok(m),
            _ => continue,
        }
    }
}

/// Sends `query` over a new TCP connection and reads one answer.
async fn over_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(query).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut body).await?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    #[test]
    fn resolv_conf_nameservers_in_order_without_the_cluster_dns() {
        let own: SocketAddr = "127.0.0.10:53".parse().unwrap();
        let text = "# a comment\nsearch corp.example\nnameserver 10.0.0.2\n\
                    nameserver 127.0.0.10\nnameserver ::1\nnameserver not-an-ip\noptions ndots:5\n";
        assert_eq!(
            upstreams_of_resolv_conf(text, own),
            ["10.0.0.2:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
        assert!(upstreams_of_resolv_conf("", own).is_empty());
        assert!(Forwarder::new(Vec::new()).is_none());
    }

    fn question(name: &str) -> Message {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m
    }

    /// An upstream on loopback answering every A question with 192.0.2.7
    /// over UDP and TCP, until the test's runtime ends.
    async fn upstream() -> SocketAddr {
        let sockets = crate::server::Sockets::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = sockets.tcp.local_addr().unwrap();
        let answer = |bytes: &[u8]| {
            let q = Message::from_vec(bytes).unwrap();
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_available = true;
            r.add_queries(q.queries.iter().cloned());
            let name = q.queries[0].name().clone();
            r.add_answer(Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 7))));
            r.to_vec().unwrap()
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, peer) = sockets.udp.recv_from(&mut buf).await.unwrap();
                // A stray datagram first: another id, then garbage.
                let mut stray = Message::from_vec(&buf[..n]).unwrap();
                stray.metadata.id = stray.metadata.id.wrapping_add(1);
                let _ = sockets.udp.send_to(&stray.to_vec().unwrap(), peer).await;
                let _ = sockets.udp.send_to(b"junk", peer).await;
                let _ = sockets.udp.send_to(&answer(&buf[..n]), peer).await;
            }
        });
        tokio::spawn(async move {
            loop {
                let (mut s, _) = sockets.tcp.accept().await.unwrap();
                let mut len = [0u8; 2];
                s.read_exact(&mut len).await.unwrap();
                let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
                s.read_exact(&mut body).await.unwrap();
                let out = answer(&body);
                s.write_all(&(out.len() as u16).to_be_bytes())
                    .await
                    .unwrap();
                s.write_all(&out).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn forwards_over_the_clients_protocol_under_its_id() {
        let good = upstream().await;
        // The first upstream never answers (a bound UDP socket nobody
        // reads; TCP refused): the second is asked.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = silent.local_addr().unwrap();
        let forwarder = Forwarder::new(vec![dead, good]).unwrap();
        for tcp in [false, true] {
            let reply = forwarder.forward(&question("example.com."), tcp).await;
            assert_eq!(reply.metadata.id, 4242, "tcp: {tcp}");
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
            let ips: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
            assert_eq!(ips, ["192.0.2.7"], "tcp: {tcp}");
        }
    }

    #[tokio::test]
    async fn no_upstream_answering_is_servfail_and_too_many_is_refused() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let forwarder = Forwarder::new(vec![silent.local_addr().unwrap()]).unwrap();
        let reply = forwarder.forward(&question("example.com."), false).await;
        assert_eq!(reply.metadata.id, 4242);
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert!(reply.metadata.recursion_available);
        assert_eq!(reply.queries.len(), 1);

        let _all = forwarder
            .slots
            .clone()
            .try_acquire_many_owned(MAX_CONCURRENT as u32)
            .unwrap();
        let reply = forwarder.forward(&question("example.com."), false).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    }
}
