//! How every subcommand logs: to stderr, as text or JSON lines, filtered as
//! Rust users expect.
//!
//! The filter, first found wins:
//! 1. `--log-level` (kube's and etcd's name; `ballast server` also reads it
//!    from `ETCD_LOG_LEVEL`, as etcd does): `error`, `warn`, `info`, `debug`,
//!    `trace`; etcd's `panic` and `fatal` mean `error`.
//! 2. `RUST_LOG`, with `tracing-subscriber`'s full directive syntax
//!    (`info,ballast_apiserver=debug`).
//! 3. `BALLAST_LOG`, its older name.
//! 4. `info`.
//!
//! raft-rs' own chatter (target `raft`) stays at `warn` unless a directive
//! names it or the level is `trace`.

use clap::builder::PossibleValuesParser;
use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// The logging flags, global: accepted before or after the subcommand.
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log level: error, warn, info, debug or trace (overrides RUST_LOG).
    #[arg(
        long = "log-level",
        id = "log_level",
        global = true,
        value_name = "LEVEL",
        value_parser = PossibleValuesParser::new(["trace", "debug", "info", "warn", "error", "panic", "fatal"]),
    )]
    pub log_level: Option<String>,
    /// Log line format: text, or json (one JSON object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The filter directives for `level` or, without one, the environment's.
fn directives(level: Option<&str>, env: impl Fn(&str) -> Option<String>) -> String {
    let quiet_raft = |d: String| {
        if d.contains("raft") || d.starts_with("trace") {
            d
        } else {
            format!("{d},raft=warn")
        }
    };
    match level {
        Some("panic" | "fatal") => "error".into(),
        Some(level) => quiet_raft(level.to_string()),
        None => env("RUST_LOG")
            .or_else(|| env("BALLAST_LOG"))
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| quiet_raft("info".into())),
    }
}

/// Installs the process's subscriber. A filter that does not parse is
/// reported and `info` used instead.
pub fn init(args: &LogArgs) {
    let wanted = directives(args.log_level.as_deref(), |k| std::env::var(k).ok());
    let (filter, bad) = match EnvFilter::try_new(&wanted) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info,raft=warn"), Some(e)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    if let Some(e) = bad {
        tracing::warn!(filter = %wanted, error = %e, "log filter not understood; logging at info");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_then_rust_log_then_ballast_log() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both = env(&[("RUST_LOG", "debug,hyper=info"), ("BALLAST_LOG", "warn")]);
        assert_eq!(directives(Some("debug"), both), "debug,raft=warn");
        assert_eq!(directives(None, both), "debug,hyper=info");
        assert_eq!(directives(None, env(&[("BALLAST_LOG", "warn")])), "warn");
        assert_eq!(directives(None, env(&[])), "info,raft=warn");
        assert_eq!(directives(Some("trace"), env(&[])), "trace");
        assert_eq!(directives(Some("fatal"), env(&[])), "error");
    }
}
