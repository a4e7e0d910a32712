//! The wire: one query message in, one response out, over UDP (truncated
//! with TC to the client's size — 512 bytes, or its EDNS payload size up
//! to 1232 — so it retries over TCP) and TCP (two-byte length prefixes,
//! several queries per connection, closed when idle).
//!
//! Only standard queries of one question in class IN are answered;
//! another opcode is NOTIMP, several questions or an undecodable body
//! FORMERR. The server is authoritative (AA) for the cluster domain; a
//! name outside it is forwarded ([`crate::forward`]) when there are
//! upstreams, else REFUSED (RA clear: no recursion).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::forward::Forwarder;
use crate::metrics::{Answered, Metrics};
use crate::names;
use crate::records::{Lookup, Zone};

/// The plain DNS limit of a UDP response without EDNS.
const UDP_PLAIN: usize = 512;
/// The largest UDP response sent even when the client allows more (the
/// DNS flag day 2020 size).
const UDP_EDNS_MAX: u16 = 1232;
/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections served at once.
const TCP_CONNECTIONS: usize = 256;

/// Answers queries about one zone from a [`Lookup`], forwarding the rest
/// when it has upstreams, counting them.
pub struct Responder<L> {
    pub zone: Zone,
    pub cluster: L,
    pub metrics: Metrics,
    pub forwarder: Option<Forwarder>,
}

/// What to do with one request.
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Outside the zone: forward it ([`Responder::forward`]).
    Forward(Message),
}

impl<L: Lookup> Responder<L> {
    /// What to answer the query in `request` from `peer`: the response,
    /// encoded for UDP (`udp`, truncated to the client's size) or TCP, or
    /// the query to forward; `None` when the bytes are not even a DNS
    /// header, or are a response.
    pub fn respond(&self, request: &[u8], udp: bool, peer: SocketAddr) -> Option<Outcome> {
        let started = Instant::now();
        let query = match Message::from_vec(request) {
            Ok(m) => m,
            Err(_) => {
                // Answer FORMERR when at least the header's id is there.
                if request.len() < 12 {
                    return None;
                }
                let id = u16::from_be_bytes([request[0], request[1]]);
                let reply = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                self.count(None, ResponseCode::FormErr, udp, peer, started);
                return reply.to_vec().ok().map(Outcome::Reply);
            }
        };
        if query.metadata.message_type != MessageType::Query {
            return None;
        }
        let reply = match self.reply(&query) {
            Some(reply) => reply,
            None if self.forwarder.is_some() => return Some(Outcome::Forward(query)),
            None => {
                let mut reply = self.response(&query);
                reply.add_queries(query.queries.iter().cloned());
                reply.metadata.response_code = ResponseCode::Refused;
                reply
            }
        };
        self.encode(&query, reply, udp, peer, started)
            .map(Outcome::Reply)
    }

    /// The upstreams' answer to `query` (see [`Outcome::Forward`]), encoded
    /// as [`Responder::respond`] encodes.
    pub async fn forward(&self, query: Message, udp: bool, peer: SocketAddr) -> Option<Vec<u8>> {
        let started = Instant::now();
        let reply = self.forwarder.as_ref()?.forward(&query, !udp).await;
        self.encode(&query, reply, udp, peer, started)
    }

    fn count(
        &self,
        qtype: Option<RecordType>,
        rcode: ResponseCode,
        udp: bool,
        peer: SocketAddr,
        started: Instant,
    ) {
        self.metrics.observe(&Answered {
            qtype,
            rcode,
            tcp: !udp,
            peer,
            took: started.elapsed(),
        })
    }

    /// `reply` counted and encoded, truncated to what the client takes
    /// over UDP.
    fn encode(
        &self,
        query: &Message,
        reply: Message,
        udp: bool,
        peer: SocketAddr,
        started: Instant,
    ) -> Option<Vec<u8>> {
        let qtype = match query.queries.as_slice() {
            [question] => Some(question.query_type()),
            _ => None,
        };
        self.count(qtype, reply.metadata.response_code, udp, peer, started);
        let limit = match (&query.edns, udp) {
            (_, false) => usize::from(u16::MAX),
            (Some(edns), true) => usize::from(edns.max_payload().clamp(512, UDP_EDNS_MAX)),
            (None, true) => UDP_PLAIN,
        };
        let bytes = reply.to_vec().ok()?;
        if bytes.len() <= limit {
            return Some(bytes);
        }
        reply.truncate().to_vec().ok()
    }

    /// An empty response to `query`, its flags copied.
    fn response(&self, query: &Message) -> Message {
        let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = false;
        reply.metadata.checking_disabled = query.metadata.checking_disabled;
        if query.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(UDP_EDNS_MAX);
            reply.set_edns(edns);
        }
        reply
    }

    /// The zone's answer to `query`; `None` for a name outside the zone.
    fn reply(&self, query: &Message) -> Option<Message> {
        let mut reply = self.response(query);
        if query.metadata.op_code != OpCode::Query {
            reply.metadata.response_code = ResponseCode::NotImp;
            return Some(reply);
        }
        let [question] = query.queries.as_slice() else {
            reply.add_queries(query.queries.iter().cloned());
            reply.metadata.response_code = ResponseCode::FormErr;
            return Some(reply);
        };
        reply.add_query(question.clone());
        if question.query_class() != DNSClass::IN {
            reply.metadata.response_code = ResponseCode::Refused;
            return Some(reply);
        }
        let name = question.name();
        let request = names::parse(name, &self.zone.domain);
        let answer = self
            .zone
            .answer(&self.cluster, name, &request, question.query_type())?;
        reply.metadata.authoritative = true;
        reply.metadata.response_code = answer.code;
        reply.add_answers(answer.answers);
        reply.add_additionals(answer.additionals);
        if let Some(soa) = answer.authority {
            reply.add_authority(soa);
        }
        Some(reply)
    }
}

/// Serves UDP on `socket` until the task is dropped.
pub async fn serve_udp<L: Lookup + Send + Sync + 'static>(
    socket: UdpSocket,
    responder: Arc<Responder<L>>,
) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        match responder.respond(&buf[..n], true, peer) {
            Some(Outcome::Reply(reply)) => send_udp(&socket, &reply, peer).await,
            Some(Outcome::Forward(query)) => {
                // The forwarder bounds how many of these run at once.
                let (socket, responder) = (socket.clone(), responder.clone());
                tokio::spawn(async move {
                    if let Some(reply) = responder.forward(query, true, peer).await {
                        send_udp(&socket, &reply, peer).await;
                    }
                });
            }
            None => {}
        }
    }
}

async fn send_udp(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(reply, peer).await {
        tracing::debug!(%peer, error = %e, "udp send failed");
    }
}

/// Serves TCP on `listener` until the task is dropped.
pub async fn serve_tcp<L: Lookup + Send + Sync + 'static>(
    listener: TcpListener,
    responder: Arc<Responder<L>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(TCP_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many tcp connections; closing");
            continue;
        };
        let responder = responder.clone();
        connections.spawn(async move {
            let _slot = slot;
            if let Err(e) = connection(stream, peer, &responder).await {
                tracing::debug!(%peer, error = %e, "tcp connection ended");
            }
        });
    }
}

async fn connection<L: Lookup>(
    mut stream: TcpStream,
    peer: SocketAddr,
    responder: &Responder<L>,
) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut body))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let reply = match responder.respond(&body, false, peer) {
            Some(Outcome::Reply(reply)) => reply,
            Some(Outcome::Forward(query)) => match responder.forward(query, false, peer).await {
                Some(reply) => reply,
                None => return Ok(()),
            },
            None => return Ok(()),
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        stream.write_all(&n.to_be_bytes()).await?;
        stream.write_all(&reply).await?;
    }
}

/// The bound sockets of one address.
pub struct Sockets {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
}

impl Sockets {
    /// Binds UDP and TCP on `addr` (port 0: one free port for both).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Sockets> {
        if addr.port() != 0 {
            let udp = UdpSocket::bind(addr).await?;
            let tcp = TcpListener::bind(addr).await?;
            return Ok(Sockets { udp, tcp });
        }
        // A free port for both: take TCP's, retry when UDP's is taken.
        let mut last = None;
        for _ in 0..16 {
            let tcp = TcpListener::bind(addr).await?;
            match UdpSocket::bind(tcp.local_addr()?).await {
                Ok(udp) => return Ok(Sockets { udp, tcp }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrInUse)))
    }
}
