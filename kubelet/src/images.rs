//! The process runtime's image catalogue, and the programs behind it.
//!
//! An image "pull" is a lookup in this catalogue; the registry host, the
//! `library/` prefix, the tag and the digest are ignored, so `busybox`,
//! `busybox:1.36` and `docker.io/library/busybox@sha256:…` are one image.
//!
//! | Image | Entrypoint | Default args | What it is |
//! |---|---|---|---|
//! | `busybox` | — | `sh` | the host's commands (`sh`, `sleep`, `echo`, `cat`, `test`, `touch`, …) with the host's `PATH` |
//! | `ballast/httpd` | `ballast image httpd` | `--port 8080` | a tiny HTTP server: 200 on `/` and `/healthz`, files under `--root DIR` (default: the working directory), one access-log line per request |
//! | `nginx` | `ballast image httpd` | `--port 80` | the same server on port 80, for manifests written for nginx |
//! | `pause`, `registry.k8s.io/pause` | `sleep` | `infinity` | sleeps until stopped |
//!
//! Servers bind to the pod's own IP (`POD_IP`, which every container sees).
//! Any other image fails to pull: `ErrImagePull`, then `ImagePullBackOff`.
//!
//! The hidden `ballast image <program> [args]` subcommand runs the programs
//! named here: `httpd`, `shim` (the process runtime's per-container
//! supervisor, see [`crate::runtime::process`]) and `exec` (how exec
//! probes and hooks enter a container).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// What the runtime needs from an image to start a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// The catalogue name (`busybox`, `ballast/httpd`).
    pub name: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The catalogue name of `image`: registry, tag and digest stripped.
pub fn normalize(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A tag is a ':' after the last '/'.
    let without_tag = match without_digest.rfind(':') {
        Some(i) if !without_digest[i..].contains('/') => &without_digest[..i],
        _ => without_digest,
    };
    let mut parts: Vec<&str> = without_tag.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            parts.remove(0);
        }
    }
    if parts.len() > 1 && parts[0] == "library" {
        parts.remove(0);
    }
    parts.join("/")
}

/// Looks `image` up in the catalogue; `ballast_exe` runs the built-in programs.
pub fn lookup(image: &str, ballast_exe: &Path) -> Option<ImageConfig> {
    let name = normalize(image);
    let host_path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let env = vec![("PATH".to_string(), host_path)];
    let exe = ballast_exe.to_string_lossy().to_string();
    let httpd = |port: &str| ImageConfig {
        name: name.clone(),
        entrypoint: vec![exe.clone(), "image".into(), "httpd".into()],
        cmd: vec!["--port".into(), port.into()],
        env: env.clone(),
    };
    Some(match name.as_str() {
        "busybox" => ImageConfig {
            name: name.clone(),
            entrypoint: vec![],
            cmd: vec!["sh".into()],
            env: env.clone(),
        },
        "ballast/httpd" => httpd("8080"),
        "nginx" => httpd("80"),
        "pause" => ImageConfig {
            name: name.clone(),
            entrypoint: vec!["sleep".into()],
            cmd: vec!["infinity".into()],
            env: env.clone(),
        },
        _ => return None,
    })
}

/// The names the catalogue knows, for error messages.
pub const KNOWN: &str = "busybox, ballast/httpd, nginx, pause";

/// Runs the built-in program `name` (`ballast image <name> [args]`) and
/// returns its exit code.
pub async fn run_program(name: &str, args: &[String]) -> anyhow::Result<i32> {
    match name {
        "httpd" => httpd(args).await.map(|()| 0),
        "shim" => crate::runtime::process::shim_main(args).await,
        "exec" => crate::runtime::process::exec_main(args),
        "sandbox" => crate::runtime::netns::holder_main(args).await,
        other => {
            anyhow::bail!("unknown image program {other:?} (known: httpd, shim, exec, sandbox)")
        }
    }
}

/// `httpd [--port N] [--root DIR]`: serves files, 200 on `/` and `/healthz`.
async fn httpd(args: &[String]) -> anyhow::Result<()> {
    let mut port: u16 = 8080;
    // Relative by default: a container reaches its working directory, not
    // necessarily the path that names it (see `runtime::confine`).
    let mut root = PathBuf::from(".");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--port" => {
                port = it
                    .next()
                    .and_then(|p| p.parse().ok())
                    .context("--port needs a port number")?
            }
            "--root" => root = PathBuf::from(it.next().context("--root needs a directory")?),
            other => anyhow::bail!("httpd: unknown argument {other:?}"),
        }
    }
    let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".to_string());
    let listener = tokio::net::TcpListener::bind((ip.as_str(), port))
        .await
        .with_context(|| format!("httpd: binding {ip}:{port}"))?;
    let shown = if root == Path::new(".") {
        std::env::current_dir().unwrap_or_else(|_| root.clone())
    } else {
        root.clone()
    };
    println!("httpd: serving {} on http://{ip}:{port}", shown.display());
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let root = root.clone();
        async move { serve_file(&root, uri.path()).await }
    });
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            term.recv().await;
        }
        println!("httpd: SIGTERM, shutting down");
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("httpd")
}

async fn serve_file(root: &Path, path: &str) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let code_and_body = if path == "/healthz" {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        let rel = path.trim_start_matches('/');
        if rel.split('/').any(|s| s == "..") {
            (StatusCode::FORBIDDEN, "forbidden\n".to_string())
        } else {
            let mut file = root.join(rel);
            if file.is_dir() {
                file = file.join("index.html");
            }
            match tokio::fs::read_to_string(&file).await {
                Ok(body) => (StatusCode::OK, body),
                Err(_) if rel.is_empty() => (StatusCode::OK, "ballast httpd\n".to_string()),
                Err(_) => (StatusCode::NOT_FOUND, "not found\n".to_string()),
            }
        }
    };
    println!("GET {path} {}", code_and_body.0.as_u16());
    code_and_body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize() {
        assert_eq!(normalize("busybox"), "busybox");
        assert_eq!(normalize("busybox:1.36"), "busybox");
        assert_eq!(normalize("docker.io/library/busybox@sha256:abc"), "busybox");
        assert_eq!(
            normalize("localhost:5000/ballast/httpd:v1"),
            "ballast/httpd"
        );
        assert_eq!(normalize("registry.k8s.io/pause:3.9"), "pause");
        let exe = Path::new("/x/ballast");
        assert!(lookup("nosuchimage:1", exe).is_none());
        let httpd = lookup("ballast/httpd:latest", exe).unwrap();
        assert_eq!(httpd.entrypoint, vec!["/x/ballast", "image", "httpd"]);
        assert_eq!(lookup("busybox", exe).unwrap().cmd, vec!["sh"]);
    }
}
