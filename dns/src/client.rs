//! A small DNS client for checks and tests: one question over UDP (or
//! TCP), the answer decoded — built with the DNS library, never by hand.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::Error;

/// How long one query may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Asks `server` for `name`'s records of `qtype`, over TCP when `tcp`,
/// else over UDP with EDNS (a 1232-byte payload).
pub async fn query(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    tcp: bool,
) -> Result<Message, Error> {
    let name = Name::from_ascii(name).map_err(|e| Error::Name(name.to_string(), e.to_string()))?;
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name, qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    message.set_edns(edns);
    let bytes = message.to_vec().map_err(|e| Error::Encode(e.to_string()))?;
    let reply = tokio::time::timeout(TIMEOUT, async {
        if tcp {
            let mut stream = TcpStream::connect(server).await?;
            let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
            stream.write_all(&len.to_be_bytes()).await?;
            stream.write_all(&bytes).await?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await?;
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        } else {
            let local: SocketAddr = if server.is_ipv4() {
                "127.0.0.1:0".parse().expect("address")
            } else {
                "[::1]:0".parse().expect("address")
            };
            let socket = UdpSocket::bind(local).await?;
            socket.send_to(&bytes, server).await?;
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, from) = socket.recv_from(&mut buf).await?;
                if from == server {
                    buf.truncate(n);
                    return Ok(buf);
                }
            }
        }
    })
    .await
    .map_err(|_| Error::Timeout(server))?
    .map_err(|e| Error::Io(server, e))?;
    let reply = Message::from_vec(&reply).map_err(|e| Error::Decode(e.to_string()))?;
    if reply.metadata.id != message.metadata.id {
        return Err(Error::Decode("the answer's id is not the query's".into()));
    }
    Ok(reply)
}
