//! etcd's command line as etcd parses it, for `ballast server`.
//!
//! - [`ETCD_FLAGS`] — every flag of etcd 3.5's `etcd --help` (and the few
//!   3.4 had that 3.5 dropped, and etcd's silently ignored legacy flags),
//!   each marked implemented by `ballast server` or accepted with a warning.
//! - [`Accepted`] — the clap arguments for the accepted-only flags, and the
//!   environment bookkeeping etcd does: every flag reads
//!   `ETCD_<FLAG_UPPER_SNAKE>` when not given on the command line; a
//!   variable shadowed by a flag stops the start (etcd 3.5 is fatal there);
//!   an unknown `ETCD_*` variable is logged.
//! - [`go_bool`], [`go_uint`], [`go_int`] — Go's `flag` value syntax
//!   (`--flag`, `--flag=false`, `0x10`), with its errors (`parse error`,
//!   `value out of range`).

use std::ffi::OsString;

use clap::builder::ValueParser;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

/// How a flag's value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Go bool: bare `--flag` is true, `--flag=false`.
    Bool,
    /// Go uint (decimal, `0x…`, `0o…`, `0b…`).
    Uint,
    /// Go int.
    Int,
    /// Go duration (`5s`, `1h30m`).
    Duration,
    /// Free text (paths, comma-separated lists, URLs).
    Str,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// etcd's `IgnoredFlag`: legacy, takes anything or nothing.
    Legacy,
}

/// What `ballast server` does with a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Implemented (a field of `ServerArgs`).
    Implemented,
    /// Accepted and ignored with a warning naming the flag and why.
    Accepted(&'static str),
}

/// One etcd flag.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    pub support: Support,
}

const fn done(name: &'static str, kind: Kind) -> Flag {
    Flag {
        name,
        kind,
        support: Support::Implemented,
    }
}

const fn no(name: &'static str, kind: Kind, why: &'static str) -> Flag {
    Flag {
        name,
        kind,
        support: Support::Accepted(why),
    }
}

use Kind::{Bool, Choice, Duration as Dur, Int, Legacy, Str, Uint};

const V2: &str = "Ballast serves only the v3 API";
const PROXY: &str = "Ballast has no v2 proxy mode";
const DISCOVERY: &str = "Ballast bootstraps from --initial-cluster only";
const BOLT: &str = "Ballast's backend is RocksDB, not bbolt";
const LOGS: &str = "Ballast logs to stderr, filtered by --log-level or RUST_LOG";
const TRACING: &str = "Ballast has no OpenTelemetry exporter";
const NOT_YET: &str = "not implemented by Ballast yet";
const TLS_EXTRA: &str = "Ballast's TLS takes --cert-file, --key-file, --trusted-ca-file and --client-cert-auth (and their --peer- twins) only";
const AUTO_TLS: &str = "Ballast needs certificates given as files";
const RAFT_TUNING: &str = "Ballast's raft transport is gRPC with its own timeouts";
const GRPC_TUNING: &str = "Ballast's gRPC server keeps its own keepalive and stream settings";
const LEGACY: &str = "etcd ignores it too";

/// etcd 3.5's flags (`server/etcdmain/config.go`), 3.4's three dropped
/// ones, and etcd's ignored legacy flags.
pub const ETCD_FLAGS: &[Flag] = &[
    // Member.
    done("name", Str),
    done("data-dir", Str),
    no(
        "wal-dir",
        Str,
        "Ballast keeps its raft log inside --data-dir",
    ),
    done("snapshot-count", Uint),
    done("heartbeat-interval", Uint),
    done("election-timeout", Uint),
    no("initial-election-tick-advance", Bool, NOT_YET),
    done("listen-peer-urls", Str),
    done("listen-client-urls", Str),
    no(
        "listen-client-http-urls",
        Str,
        "Ballast serves HTTP and gRPC together on --listen-client-urls",
    ),
    no(
        "max-snapshots",
        Uint,
        "Ballast keeps no snapshot files in --data-dir",
    ),
    no(
        "max-wals",
        Uint,
        "Ballast's raft log is compacted at each checkpoint",
    ),
    done("quota-backend-bytes", Int),
    no("backend-bbolt-freelist-type", Str, BOLT),
    no("backend-batch-interval", Dur, BOLT),
    no("backend-batch-limit", Int, BOLT),
    done("max-txn-ops", Uint),
    done("max-request-bytes", Uint),
    no("max-concurrent-streams", Uint, GRPC_TUNING),
    no("grpc-keepalive-min-time", Dur, GRPC_TUNING),
    no("grpc-keepalive-interval", Dur, GRPC_TUNING),
    no("grpc-keepalive-timeout", Dur, GRPC_TUNING),
    no("socket-reuse-port", Bool, NOT_YET),
    no("socket-reuse-address", Bool, NOT_YET),
    no("raft-read-timeout", Dur, RAFT_TUNING),
    no("raft-write-timeout", Dur, RAFT_TUNING),
    // Clustering.
    done("initial-advertise-peer-urls", Str),
    done("initial-cluster", Str),
    done("initial-cluster-state", Choice(&["new", "existing"])),
    done("initial-cluster-token", Str),
    done("advertise-client-urls", Str),
    no("discovery", Str, DISCOVERY),
    no("discovery-fallback", Choice(&["proxy", "exit"]), DISCOVERY),
    no("discovery-proxy", Str, DISCOVERY),
    no("discovery-srv", Str, DISCOVERY),
    no("discovery-srv-name", Str, DISCOVERY),
    no("strict-reconfig-check", Bool, NOT_YET),
    no("pre-vote", Bool, "Ballast's raft always runs pre-vote"),
    no("auto-compaction-retention", Str, NOT_YET),
    no(
        "auto-compaction-mode",
        Choice(&["periodic", "revision"]),
        NOT_YET,
    ),
    no("enable-v2", Bool, V2),
    no(
        "v2-deprecation",
        Choice(&[
            "not-yet",
            "write-only",
            "write-only-skip-check",
            "write-only-drop-data",
            "gone",
        ]),
        V2,
    ),
    // Proxy.
    no("proxy", Choice(&["off", "readonly", "on"]), PROXY),
    no("proxy-failure-wait", Uint, PROXY),
    no("proxy-refresh-interval", Uint, PROXY),
    no("proxy-dial-timeout", Uint, PROXY),
    no("proxy-write-timeout", Uint, PROXY),
    no("proxy-read-timeout", Uint, PROXY),
    // Security.
    done("cert-file", Str),
    done("key-file", Str),
    no("client-cert-file", Str, TLS_EXTRA),
    no("client-key-file", Str, TLS_EXTRA),
    done("client-cert-auth", Bool),
    no("client-crl-file", Str, TLS_EXTRA),
    no("client-cert-allowed-hostname", Str, TLS_EXTRA),
    done("trusted-ca-file", Str),
    no("auto-tls", Bool, AUTO_TLS),
    done("peer-cert-file", Str),
    done("peer-key-file", Str),
    no("peer-client-cert-file", Str, TLS_EXTRA),
    no("peer-client-key-file", Str, TLS_EXTRA),
    done("peer-client-cert-auth", Bool),
    done("peer-trusted-ca-file", Str),
    no("peer-cert-allowed-cn", Str, TLS_EXTRA),
    no("peer-cert-allowed-hostname", Str, TLS_EXTRA),
    no("peer-auto-tls", Bool, AUTO_TLS),
    no("self-signed-cert-validity", Uint, AUTO_TLS),
    no("peer-crl-file", Str, TLS_EXTRA),
    no("cipher-suites", Str, TLS_EXTRA),
    no("cors", Str, V2),
    no("host-whitelist", Str, V2),
    no(
        "tls-min-version",
        Choice(&["TLS1.2", "TLS1.3"]),
        "Ballast's TLS (rustls) takes TLS 1.2 and 1.3",
    ),
    no(
        "tls-max-version",
        Choice(&["", "TLS1.2", "TLS1.3"]),
        "Ballast's TLS (rustls) takes TLS 1.2 and 1.3",
    ),
    no(
        "experimental-peer-skip-client-san-verification",
        Bool,
        TLS_EXTRA,
    ),
    // Auth.
    no("auth-token", Str, "Ballast issues simple tokens only"),
    no("bcrypt-cost", Uint, NOT_YET),
    no("auth-token-ttl", Uint, NOT_YET),
    // Profiling and monitoring.
    no("enable-pprof", Bool, "Ballast has no pprof endpoint"),
    no(
        "metrics",
        Choice(&["basic", "extensive"]),
        "Ballast exports one set of metrics",
    ),
    done("listen-metrics-urls", Str),
    // Logging.
    no("logger", Choice(&["zap"]), LOGS),
    no("log-outputs", Str, LOGS),
    no(
        "log-level",
        Choice(&["debug", "info", "warn", "error", "panic", "fatal"]),
        LOGS,
    ),
    no("enable-log-rotation", Bool, LOGS),
    no("log-rotation-config-json", Str, LOGS),
    // Distributed tracing.
    no("experimental-enable-distributed-tracing", Bool, TRACING),
    no("experimental-distributed-tracing-address", Str, TRACING),
    no(
        "experimental-distributed-tracing-service-name",
        Str,
        TRACING,
    ),
    no("experimental-distributed-tracing-instance-id", Str, TRACING),
    no(
        "experimental-distributed-tracing-sampling-rate",
        Int,
        TRACING,
    ),
    // v2v3 and the gateway.
    no("experimental-enable-v2v3", Str, V2),
    no("enable-grpc-gateway", Bool, "Ballast has no JSON gateway"),
    // Experimental.
    done("experimental-initial-corrupt-check", Bool),
    done("experimental-corrupt-check-time", Dur),
    no("experimental-compact-hash-check-enabled", Bool, NOT_YET),
    no("experimental-compact-hash-check-time", Dur, NOT_YET),
    no("experimental-enable-lease-checkpoint", Bool, NOT_YET),
    no(
        "experimental-enable-lease-checkpoint-persist",
        Bool,
        NOT_YET,
    ),
    no("experimental-compaction-batch-limit", Int, NOT_YET),
    no("experimental-compaction-sleep-interval", Dur, NOT_YET),
    done("experimental-watch-progress-notify-interval", Dur),
    no(
        "experimental-downgrade-check-time",
        Dur,
        "Ballast has no downgrade",
    ),
    no("experimental-warning-apply-duration", Dur, NOT_YET),
    no("experimental-memory-mlock", Bool, BOLT),
    no("experimental-txn-mode-write-with-shared-buffer", Bool, BOLT),
    no("experimental-stop-grpc-service-on-defrag", Bool, NOT_YET),
    no(
        "experimental-bootstrap-defrag-threshold-megabytes",
        Uint,
        BOLT,
    ),
    done("experimental-snapshot-catchup-entries", Uint),
    // Unsafe.
    no("unsafe-no-fsync", Bool, "Ballast always syncs its raft log"),
    no("force-new-cluster", Bool, NOT_YET),
    // Process.
    done("config-file", Str),
    done("version", Bool),
    // etcd 3.4's, gone in 3.5.
    no("debug", Bool, LOGS),
    no("log-package-levels", Str, LOGS),
    no("experimental-backend-bbolt-freelist-type", Str, BOLT),
    // etcd's ignored legacy flags.
    no("cluster-active-size", Legacy, LEGACY),
    no("cluster-remove-delay", Legacy, LEGACY),
    no("cluster-sync-interval", Legacy, LEGACY),
    no("config", Legacy, LEGACY),
    no("force", Legacy, LEGACY),
    no("max-result-buffer", Legacy, LEGACY),
    no("max-retry-attempts", Legacy, LEGACY),
    no("peer-heartbeat-interval", Legacy, LEGACY),
    no("peer-election-timeout", Legacy, LEGACY),
    no("retry-interval", Legacy, LEGACY),
    no("snapshot", Legacy, LEGACY),
    no("v", Legacy, LEGACY),
    no("vv", Legacy, LEGACY),
];

/// Flags read from no environment variable (`ETCD_VERSION` is special in
/// etcd: it is refused with a warning).
const NO_ENV: &[&str] = &["version"];

/// The command line as Go's `flag` package reads etcd's: `-name` is
/// `--name`. After the `server` subcommand (and before a `--`), the
/// single-dash spelling of an etcd flag becomes the double-dash one clap
/// knows; everything else is left as it is.
pub fn go_style_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    #[derive(PartialEq)]
    enum At {
        BeforeCommand,
        Server,
        Done,
    }
    let mut at = At::BeforeCommand;
    let mut out = Vec::new();
    for (i, arg) in args.into_iter().enumerate() {
        let s = arg.to_str().unwrap_or_default();
        match at {
            _ if i == 0 => {}
            At::BeforeCommand if !s.starts_with('-') => {
                at = if s == "server" { At::Server } else { At::Done };
            }
            At::Server if s == "--" => at = At::Done,
            At::Server if is_single_dash_flag(s) => {
                out.push(OsString::from(format!("-{s}")));
                continue;
            }
            _ => {}
        }
        out.push(arg);
    }
    out
}

/// `-name` or `-name=value` for an etcd flag `name`.
fn is_single_dash_flag(arg: &str) -> bool {
    let Some(rest) = arg.strip_prefix('-').filter(|r| !r.starts_with('-')) else {
        return false;
    };
    let name = rest.split_once('=').map_or(rest, |(n, _)| n);
    ETCD_FLAGS.iter().any(|f| f.name == name)
}

/// `ETCD_<FLAG_UPPER_SNAKE>`, as etcd's `flags.FlagToEnv("ETCD", name)`.
pub fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

/// clap's id of a flag: the field name `derive` gives it.
pub fn arg_id(flag: &str) -> String {
    flag.replace('-', "_")
}

/// Go's `strconv.ParseBool`, as a `flag.Bool` takes it.
pub fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("parse error".into()),
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)` (decimal, `0x`, `0o`, `0b`, a leading
/// `0` for octal, `_` between digits with a prefix), with `flag`'s errors.
pub fn go_uint(s: &str) -> Result<u64, String> {
    let (base, digits) = match s.get(..2) {
        Some("0x" | "0X") => (16, &s[2..]),
        Some("0o" | "0O") => (8, &s[2..]),
        Some("0b" | "0B") => (2, &s[2..]),
        _ if s.len() > 1 && s.starts_with('0') => (8, &s[1..]),
        _ => (10, s),
    };
    let parse_error = || "parse error".to_string();
    if base != 10 {
        // Go allows `_` after the prefix and between digits.
        let bad_underscore = digits.ends_with('_') || digits.contains("__");
        if bad_underscore {
            return Err(parse_error());
        }
    } else if s.contains('_') {
        return Err(parse_error());
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    if clean.is_empty() || !clean.chars().all(|c| c.is_digit(base)) {
        return Err(parse_error());
    }
    u64::from_str_radix(&clean, base).map_err(|_| "value out of range".to_string())
}

/// Go's `strconv.ParseInt(s, 0, 64)`, with `flag`'s errors.
pub fn go_int(s: &str) -> Result<i64, String> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = go_uint(rest)?;
    let limit = i64::MAX as u64 + u64::from(negative);
    if magnitude > limit {
        return Err("value out of range".into());
    }
    Ok(match negative {
        true => (magnitude as i64).wrapping_neg(),
        false => magnitude as i64,
    })
}

fn choice(s: &str, valid: &[&str]) -> Result<String, String> {
    match valid.contains(&s) {
        true => Ok(s.to_string()),
        // etcd's SelectiveStringValue: `invalid value "x"`.
        false => Err(format!("invalid value {s:?}")),
    }
}

/// Where an accepted-only flag's value came from, and what it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Given {
    pub flag: &'static str,
    pub value: String,
    pub why: &'static str,
}

/// The accepted-only flags given, and what the environment held.
#[derive(Clone, Debug, Default)]
pub struct Accepted {
    /// Accepted-only flags given on the command line or by environment.
    pub given: Vec<Given>,
    /// `ETCD_*` variables a command-line flag shadows.
    pub shadowed: Vec<String>,
    /// `ETCD_*` variables that set a flag.
    pub used_env: Vec<String>,
    /// `ETCD_*` variables that name no flag.
    pub unknown_env: Vec<String>,
}

impl Accepted {
    /// Logs what etcd logs about the environment and the ignored flags;
    /// fails, as etcd 3.5 does, when a flag shadows an `ETCD_*` variable.
    pub fn report(&self) -> anyhow::Result<()> {
        if let Some(var) = self.shadowed.first() {
            anyhow::bail!(
                "conflicting environment variable {var:?} is shadowed by corresponding \
                 command-line flag (either unset environment variable or disable flag)"
            );
        }
        for var in &self.used_env {
            tracing::info!(variable_name = %var, "recognized and used environment variable");
        }
        for var in &self.unknown_env {
            match var.as_str() {
                "ETCD_VERSION" => {
                    tracing::warn!(key = %var, "cannot set special environment variable")
                }
                _ => {
                    tracing::warn!(environment_variable = %var, "unrecognized environment variable")
                }
            }
        }
        // `--log-level` shares its id with the global logging flag
        // (`logging.rs`), which takes the value: it is not ignored.
        for g in self.given.iter().filter(|g| g.flag != "log-level") {
            tracing::warn!(
                "--{}={} is accepted for etcd compatibility and ignored: {}",
                g.flag,
                g.value,
                g.why
            );
        }
        Ok(())
    }
}

fn accepted_arg(flag: &Flag) -> Arg {
    // clap (without its `string` feature) takes static names; a command
    // is built once per process.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let arg = Arg::new(leak(arg_id(flag.name)))
        .long(flag.name)
        .env(leak(env_name(flag.name)))
        .action(ArgAction::Set)
        .help("etcd flag, accepted and ignored (logged at start)")
        .help_heading("etcd flags accepted for compatibility (no effect in Ballast)");
    let parser: ValueParser = match flag.kind {
        Kind::Bool => ValueParser::new(|s: &str| go_bool(s).map(|_| s.to_string())),
        Kind::Uint => ValueParser::new(|s: &str| go_uint(s).map(|_| s.to_string())),
        Kind::Int => ValueParser::new(|s: &str| go_int(s).map(|_| s.to_string())),
        Kind::Duration => {
            ValueParser::new(|s: &str| crate::duration::parse(s).map(|_| s.to_string()))
        }
        Kind::Choice(valid) => ValueParser::new(move |s: &str| choice(s, valid)),
        Kind::Str | Kind::Legacy => ValueParser::string(),
    };
    let arg = arg.value_parser(parser);
    match flag.kind {
        Kind::Bool | Kind::Legacy => arg
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true"),
        _ => arg.num_args(1).allow_hyphen_values(true),
    }
}

impl Args for Accepted {
    fn augment_args(cmd: Command) -> Command {
        // Go's flag package: a repeated flag's last value wins.
        let cmd = cmd.args_override_self(true);
        ETCD_FLAGS
            .iter()
            .filter(|f| matches!(f.support, Support::Accepted(_)))
            .fold(cmd, |cmd, f| cmd.arg(accepted_arg(f)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Accepted {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut out = Accepted::default();
        let mut known = Vec::new();
        for flag in ETCD_FLAGS {
            let id = arg_id(flag.name);
            if NO_ENV.contains(&flag.name) {
                continue;
            }
            let env = env_name(flag.name);
            known.push(env.clone());
            let source = matches.value_source(&id);
            match source {
                Some(ValueSource::CommandLine) if std::env::var_os(&env).is_some() => {
                    out.shadowed.push(env.clone())
                }
                Some(ValueSource::EnvVariable) => out.used_env.push(env.clone()),
                _ => {}
            }
            let explicit = matches!(
                source,
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if let (Support::Accepted(why), true) = (flag.support, explicit) {
                let value = matches.get_one::<String>(&id).cloned().unwrap_or_default();
                out.given.push(Given {
                    flag: flag.name,
                    value,
                    why,
                });
            }
        }
        let mut unknown: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with("ETCD_") && !known.contains(k))
            .collect();
        unknown.sort();
        out.unknown_env = unknown;
        Ok(out)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_etcd_flags() {
        let args = |v: &[&str]| -> Vec<String> {
            go_style_args(v.iter().map(OsString::from))
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            args(&[
                "ballast",
                "server",
                "-name",
                "a",
                "-data-dir=/d",
                "--listen-client-urls",
                "-snapshot-count",
                "5"
            ]),
            [
                "ballast",
                "server",
                "--name",
                "a",
                "--data-dir=/d",
                "--listen-client-urls",
                "--snapshot-count",
                "5"
            ]
        );
        // Unknown single-dash words, `-h`, values after `--` and other
        // subcommands are left alone.
        assert_eq!(
            args(&["ballast", "server", "-nonsense", "-h", "--", "-name"]),
            ["ballast", "server", "-nonsense", "-h", "--", "-name"]
        );
        assert_eq!(
            args(&["ballast", "apiserver", "-name"]),
            ["ballast", "apiserver", "-name"]
        );
    }

    #[test]
    fn go_values() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(go_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(go_bool(f), Ok(false), "{f}");
        }
        assert_eq!(go_bool("yes").unwrap_err(), "parse error");
        assert_eq!(go_uint("10000"), Ok(10_000));
        assert_eq!(go_uint("0x10"), Ok(16));
        assert_eq!(go_uint("0o17"), Ok(15));
        assert_eq!(go_uint("017"), Ok(15));
        assert_eq!(go_uint("0b101"), Ok(5));
        assert_eq!(go_uint("0x_1_0"), Ok(16));
        assert_eq!(go_uint("0x1__0"), Err("parse error".into()));
        assert_eq!(go_uint("0x1_0"), Ok(16));
        assert_eq!(go_uint("0"), Ok(0));
        for bad in ["", "-1", "1_000", "abc", "08", "0x", "1.5"] {
            assert_eq!(go_uint(bad), Err("parse error".into()), "{bad:?}");
        }
        assert_eq!(
            go_uint("18446744073709551616"),
            Err("value out of range".into())
        );
        assert_eq!(go_int("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(
            go_int("9223372036854775808"),
            Err("value out of range".into())
        );
        assert_eq!(go_int("-0x10"), Ok(-16));
    }

    #[test]
    fn env_names_are_etcds() {
        assert_eq!(env_name("listen-client-urls"), "ETCD_LISTEN_CLIENT_URLS");
        assert_eq!(
            env_name("experimental-watch-progress-notify-interval"),
            "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL"
        );
    }

    #[test]
    fn the_table_has_no_duplicates() {
        let mut names: Vec<&str> = ETCD_FLAGS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
