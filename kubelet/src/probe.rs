//! Network probes and hooks as kubelet runs them: `httpGet` (success on
//! 200–399) and `tcpSocket` (success when a connection opens), both
//! against the pod IP unless a host is given. Messages follow kubelet's.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::runtime::ProbeResult;

/// Resolves a numeric or named container port.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| {
                    format!(
                        "couldn't find port {name:?} in container {:?}",
                        container.name
                    )
                })
        }
    }
}

/// An HTTP GET probe.
pub async fn http_get(
    action: &HTTPGetAction,
    pod_ip: &str,
    container: &Container,
    timeout: Duration,
) -> ProbeResult {
    let port = match resolve_port(&action.port, container) {
        Ok(p) => p,
        Err(e) => return ProbeResult::Failure(e),
    };
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_ip.to_string());
    let path = action
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let url = format!("http://{host}:{port}{path}");
    if action
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
    {
        return ProbeResult::Failure(format!(
            "Get {:?}: HTTPS probes are not supported",
            url.replacen("http", "https", 1)
        ));
    }
    let exchange = async {
        let mut stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| {
                format!(
                    "Get {url:?}: dial tcp {host}:{port}: connect: {}",
                    short_io(&e)
                )
            })?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for h in action.http_headers.iter().flatten() {
            request.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("Get {url:?}: {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("Get {url:?}: malformed HTTP response"))?;
        Ok::<u16, String>(code)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(code)) if (200..400).contains(&code) => ProbeResult::Success,
        Ok(Ok(code)) => ProbeResult::Failure(format!("HTTP probe failed with statuscode: {code}")),
        Ok(Err(e)) => ProbeResult::Failure(e),
        Err(_) => ProbeResult::Failure(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// A TCP socket probe.
pub async fn tcp_socket(
    action: &TCPSocketAction,
    pod_ip: &str,
    container: &Container,
    timeout: Duration,
) -> ProbeResult {
    let port = match resolve_port(&action.port, container) {
        Ok(p) => p,
        Err(e) => return ProbeResult::Failure(e),
    };
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_ip.to_string());
    match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port))).await {
        Ok(Ok(_)) => ProbeResult::Success,
        Ok(Err(e)) => {
            ProbeResult::Failure(format!("dial tcp {host}:{port}: connect: {}", short_io(&e)))
        }
        Err(_) => ProbeResult::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

fn short_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    #[tokio::test]
    async fn http_and_tcp_probes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let code = if req.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let container = Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("web".into()),
                container_port: port as i32,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let t = Duration::from_secs(2);
        let ok = HTTPGetAction {
            path: Some("/ok".into()),
            port: IntOrString::String("web".into()),
            ..Default::default()
        };
        assert_eq!(
            http_get(&ok, "127.0.0.1", &container, t).await,
            ProbeResult::Success
        );
        let bad = HTTPGetAction {
            path: Some("/bad".into()),
            port: IntOrString::Int(port as i32),
            ..Default::default()
        };
        assert_eq!(
            http_get(&bad, "127.0.0.1", &container, t).await,
            ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
        );
        let tcp = TCPSocketAction {
            port: IntOrString::Int(port as i32),
            ..Default::default()
        };
        assert_eq!(
            tcp_socket(&tcp, "127.0.0.1", &container, t).await,
            ProbeResult::Success
        );
        let closed = TCPSocketAction {
            port: IntOrString::Int(1),
            ..Default::default()
        };
        match tcp_socket(&closed, "127.0.0.1", &container, t).await {
            ProbeResult::Failure(m) => assert!(m.contains("connection refused"), "{m}"),
            other => panic!("{other:?}"),
        }
        let unnamed = HTTPGetAction {
            port: IntOrString::String("nope".into()),
            ..Default::default()
        };
        assert!(matches!(
            http_get(&unnamed, "127.0.0.1", &container, t).await,
            ProbeResult::Failure(_)
        ));
    }
}
