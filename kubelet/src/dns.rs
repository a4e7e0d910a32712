//! A pod's `/etc/resolv.conf` and `/etc/hosts`, made as kubelet's DNS
//! configurer (`pkg/kubelet/network/dns`) and hosts-file writer
//! (`kubelet_pods.go`) make them, and written into the pod's directory
//! before its first container starts:
//!
//! ```text
//! <pod dir>/resolv.conf   what the CRI runtime writes from the pod's DNSConfig
//! <pod dir>/etc-hosts     kubelet's managed hosts file
//! ```
//!
//! With mount namespaces (`--mount-namespaces`, a root kubelet) both are
//! bound over `/etc/resolv.conf` and `/etc/hosts` in every container's
//! view ([`container_mounts`]), unless the container mounts a volume at
//! that path (kube skips its hosts file then, containerd its
//! resolv.conf). Without them containers share the host's files; the
//! pod's are still written, for inspection.
//!
//! The resolver configuration by `dnsPolicy`, for a pod in namespace `web`
//! on a kubelet with `--cluster-dns 127.0.0.10 --cluster-domain
//! cluster.local` and a node resolv.conf of `nameserver 10.0.0.2`,
//! `search corp.example`:
//!
//! ```text
//! ClusterFirst             search web.svc.cluster.local svc.cluster.local cluster.local corp.example
//!                          nameserver 127.0.0.10
//!                          options ndots:5
//! ClusterFirst, hostNetwork  as Default
//! ClusterFirstWithHostNet  as ClusterFirst
//! Default                  the node's: search corp.example / nameserver 10.0.0.2
//! None                     nothing but spec.dnsConfig
//! ```
//!
//! `spec.dnsConfig` is then appended (nameservers and searches without
//! duplicates; an option of the same name replaces the base's), and the
//! result cut to resolver limits: 3 nameservers, 32 search domains, 2048
//! characters of search line, no domain over 253 characters — each cut
//! is a `DNSConfigForming` warning on the pod. ClusterFirst on a kubelet
//! without `--cluster-dns` falls back to Default with `MissingClusterDNS`
//! warnings on the node and the pod.
//!
//! The apiserver is where kube rejects a bad `dnsPolicy`, `dnsConfig`,
//! `hostname`, `subdomain` or `hostAliases` (422); entries the kubelet
//! cannot write safely are left out here with a warning naming kube's
//! validation message, so no value ever adds a line of its own to either
//! file.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, HostAlias, Pod, PodDNSConfig};

use crate::runtime::mounts::Mount;

/// kube's `MaxDNSNameservers` (glibc's `MAXNS`).
pub const MAX_NAMESERVERS: usize = 3;
/// kube's `MaxDNSSearchPaths` and `MaxDNSSearchListChars` (expanded DNS
/// configuration, GA since 1.28).
pub const MAX_SEARCH_PATHS: usize = 32;
pub const MAX_SEARCH_LIST_CHARS: usize = 2048;
/// A search domain longer than a DNS-1123 subdomain aborts some resolvers
/// (glibc 2.28): left out.
const MAX_SEARCH_PATH: usize = 253;
/// What kubelet reads of a resolv.conf at most.
const MAX_RESOLV_CONF: u64 = 10 << 20;
/// kubelet's options for cluster-first pods.
const DEFAULT_OPTIONS: [&str; 1] = ["ndots:5"];

/// The files' names in the pod's directory.
pub const RESOLV_CONF: &str = "resolv.conf";
pub const ETC_HOSTS: &str = "etc-hosts";
/// Where containers see them.
const RESOLV_CONF_TARGET: &str = "/etc/resolv.conf";
const ETC_HOSTS_TARGET: &str = "/etc/hosts";
/// The node's hosts file (a host-network pod's base).
const NODE_HOSTS: &str = "/etc/hosts";
/// The hosts files' first lines.
const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";
const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";

const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// The kubelet's DNS flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configurer {
    /// `--cluster-dns`: the nameservers of cluster-first pods.
    pub cluster_dns: Vec<IpAddr>,
    /// `--cluster-domain`: empty adds no cluster search domains.
    pub cluster_domain: String,
    /// `--resolv-conf`: the node's resolver configuration, the base of
    /// every policy but None; `None` (the flag empty) stands for a
    /// resolver on this machine (`nameserver 127.0.0.1`, `search .`).
    pub resolv_conf: Option<PathBuf>,
}

/// A resolver configuration (the CRI's `DNSConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl DnsConfig {
    /// The resolv.conf text, as containerd writes it; `None` when empty
    /// (containerd then copies the host's).
    pub fn render(&self) -> Option<String> {
        if self.servers.is_empty() && self.searches.is_empty() && self.options.is_empty() {
            return None;
        }
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for s in &self.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        Some(out)
    }
}

/// An event the configurer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// About the node rather than the pod.
    pub about_node: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Notice {
    fn pod(reason: &'static str, message: String) -> Notice {
        Notice {
            about_node: false,
            reason,
            message,
        }
    }
}

/// Which base a pod's configuration starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodDnsType {
    Cluster,
    Host,
    None,
}

/// kubelet's `parseResolvConf`: nameservers accumulate, the last
/// `search` and `options` lines win; search domains lose a trailing dot.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut out = DnsConfig::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => out.servers.extend(fields.next().map(str::to_string)),
            Some("search") => {
                out.searches = fields
                    .map(|s| s.strip_suffix('.').unwrap_or(s).to_string())
                    .collect()
            }
            Some("options") => out.options = fields.map(str::to_string).collect(),
            _ => {}
        }
    }
    out
}

/// Keeps the first of each entry, in order.
fn omit_duplicates(all: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    all.into_iter().filter(|s| seen.insert(s.clone())).collect()
}

/// A `dnsConfig` option: its name and value.
type NamedOption = (String, Option<String>);

/// kubelet's `mergeDNSOptions`: an option named again takes the new
/// value (in its old place; kube's order is a Go map's, i.e. none).
fn merge_options(mut options: Vec<String>, extra: &[NamedOption]) -> Vec<String> {
    for (name, value) in extra {
        let option = match value.as_deref() {
            Some(v) if !v.is_empty() => format!("{name}:{v}"),
            _ => name.clone(),
        };
        let same = |o: &String| o.split_once(':').map_or(o.as_str(), |(n, _)| n) == name;
        match options.iter().position(same) {
            Some(i) => options[i] = option,
            None => options.push(option),
        }
    }
    options
}

fn is_subdomain(s: &str) -> bool {
    crate::env::is_dns1123_subdomain(s)
}

fn invalid(field: &str, value: &str, msg: &str) -> String {
    format!("{field}: Invalid value: {value:?}: {msg}")
}

/// The entries of a `dnsConfig` that pass kube's checks.
struct Checked {
    servers: Vec<String>,
    searches: Vec<String>,
    options: Vec<NamedOption>,
}

/// The checks kube's apiserver makes of `spec.dnsConfig` (422 there): the
/// entries that pass, and a warning for each left out.
fn checked_dns_config(config: &PodDNSConfig, notices: &mut Vec<Notice>) -> Checked {
    let mut warn = |m: String| notices.push(Notice::pod("DNSConfigForming", m));
    let mut servers = Vec::new();
    for (i, ns) in config.nameservers.iter().flatten().enumerate() {
        match ns.parse::<IpAddr>() {
            Ok(_) => servers.push(ns.clone()),
            Err(_) => warn(invalid(
                &format!("spec.dnsConfig.nameservers[{i}]"),
                ns,
                IP_MSG,
            )),
        }
    }
    let mut searches = Vec::new();
    for (i, s) in config.searches.iter().flatten().enumerate() {
        // A trailing dot is fine; "." alone and underscores are kube's
        // relaxed search validation (on by default since 1.33).
        let bare = s.strip_suffix('.').unwrap_or(s);
        if s == "." || is_subdomain(&bare.replace('_', "a")) {
            searches.push(s.clone());
        } else {
            warn(invalid(
                &format!("spec.dnsConfig.searches[{i}]"),
                s,
                SUBDOMAIN_MSG,
            ));
        }
    }
    let mut options = Vec::new();
    for (i, o) in config.options.iter().flatten().enumerate() {
        let name = o.name.clone().unwrap_or_default();
        let field = format!("spec.dnsConfig.options[{i}]");
        if name.is_empty() {
            warn(format!("{field}: Required value: must not be empty"));
        } else if name
            .chars()
            .chain(o.value.iter().flat_map(|v| v.chars()))
            .any(|c| c.is_whitespace() || c.is_control())
        {
            warn(invalid(&field, &name, "must not contain whitespace"));
        } else {
            options.push((name, o.value.clone()));
        }
    }
    Checked {
        servers,
        searches,
        options,
    }
}

impl Configurer {
    /// The node's resolver configuration (kubelet's `getHostDNSConfig`).
    fn host_config(&self) -> std::io::Result<DnsConfig> {
        let Some(path) = &self.resolv_conf else {
            return Ok(DnsConfig::default());
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_RESOLV_CONF).read_to_string(&mut text))
            .map_err(|e| std::io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        Ok(parse_resolv_conf(&text))
    }

    /// kubelet's `CheckLimitsForResolvConf` (every 30 s): why the node's
    /// resolv.conf cannot be passed on to pods whole, if it cannot — a
    /// warning about the node (`CheckLimitsForResolvConf`).
    pub fn check_resolv_conf(&self) -> Option<String> {
        let path = self.resolv_conf.as_ref()?;
        let host = match self.host_config() {
            Ok(c) => c,
            Err(e) => return Some(e.to_string()),
        };
        let mut limit = MAX_SEARCH_PATHS;
        if !self.cluster_domain.is_empty() {
            limit -= 3;
        }
        let path = path.display();
        if host.searches.len() > limit {
            return Some(format!(
                "Resolv.conf file '{path}' contains search line consisting of more than {limit} domains!"
            ));
        }
        if host.searches.iter().any(|s| s.len() > MAX_SEARCH_PATH) {
            return Some(format!(
                "Resolv.conf file \"{path}\" contains a search path which length is more than allowed {MAX_SEARCH_PATH} chars!"
            ));
        }
        if host.searches.join(" ").len() > MAX_SEARCH_LIST_CHARS {
            return Some(format!(
                "Resolv.conf file '{path}' contains search line which length is more than allowed {MAX_SEARCH_LIST_CHARS} chars!"
            ));
        }
        None
    }

    /// `<ns>.svc.<domain> svc.<domain> <domain>`, then the node's.
    fn cluster_searches(&self, host: Vec<String>, namespace: &str) -> Vec<String> {
        if self.cluster_domain.is_empty() {
            return host;
        }
        let d = &self.cluster_domain;
        let mut all = vec![
            format!("{namespace}.svc.{d}"),
            format!("svc.{d}"),
            d.to_string(),
        ];
        all.extend(host);
        omit_duplicates(all)
    }

    /// The pod's resolver configuration (kubelet's `GetPodDNS`) and the
    /// events it asks for; the error is why the node's resolv.conf could
    /// not be read (the sandbox is not created then).
    pub fn pod_dns(&self, pod: &Pod) -> std::io::Result<(DnsConfig, Vec<Notice>)> {
        let mut notices = Vec::new();
        let mut config = self.host_config()?;
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
        let host_network = spec.host_network == Some(true);
        let kind = match policy {
            "None" => PodDnsType::None,
            "ClusterFirstWithHostNet" => PodDnsType::Cluster,
            "ClusterFirst" if !host_network => PodDnsType::Cluster,
            "ClusterFirst" | "Default" => PodDnsType::Host,
            other => {
                notices.push(Notice::pod(
                    "DNSConfigForming",
                    format!(
                        "spec.dnsPolicy: Unsupported value: {other:?}: supported values: \
                         \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"; \
                         falling back to \"ClusterFirst\""
                    ),
                ));
                PodDnsType::Cluster
            }
        };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut host = kind == PodDnsType::Host;
        match kind {
            PodDnsType::None => config = DnsConfig::default(),
            PodDnsType::Cluster if !self.cluster_dns.is_empty() => {
                config.servers = self.cluster_dns.iter().map(IpAddr::to_string).collect();
                config.searches = self.cluster_searches(config.searches, namespace);
                config.options = DEFAULT_OPTIONS.map(String::from).to_vec();
            }
            PodDnsType::Cluster => {
                let msg = "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.";
                notices.push(Notice {
                    about_node: true,
                    reason: "MissingClusterDNS",
                    message: msg.to_string(),
                });
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                notices.push(Notice::pod(
                    "MissingClusterDNS",
                    format!("pod: \"{name}_{namespace}({uid})\". {msg}"),
                ));
                host = true;
            }
            PodDnsType::Host => {}
        }
        if host && self.resolv_conf.is_none() {
            // The node's IPs are loopback IPv4 addresses.
            config.servers.push("127.0.0.1".into());
            config.searches = vec![".".into()];
        }
        match &spec.dns_config {
            Some(extra) => {
                if kind == PodDnsType::None && extra.nameservers.as_ref().is_none_or(Vec::is_empty)
                {
                    notices.push(Notice::pod(
                        "DNSConfigForming",
                        "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None".into(),
                    ));
                }
                let checked = checked_dns_config(extra, &mut notices);
                config.servers = omit_duplicates([config.servers, checked.servers].concat());
                config.searches = omit_duplicates([config.searches, checked.searches].concat());
                config.options = merge_options(config.options, &checked.options);
            }
            None if kind == PodDnsType::None => notices.push(Notice::pod(
                "DNSConfigForming",
                "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"
                    .into(),
            )),
            None => {}
        }
        let config = fit_limits(config, &mut notices);
        Ok((config, notices))
    }
}

/// kubelet's `formDNSConfigFitsLimits`.
fn fit_limits(mut config: DnsConfig, notices: &mut Vec<Notice>) -> DnsConfig {
    if config.servers.len() > MAX_NAMESERVERS {
        config.servers.truncate(MAX_NAMESERVERS);
        notices.push(Notice::pod(
            "DNSConfigForming",
            format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
                config.servers.join(" ")
            ),
        ));
    }
    let mut exceeded = false;
    if config.searches.len() > MAX_SEARCH_PATHS {
        config.searches.truncate(MAX_SEARCH_PATHS);
        exceeded = true;
    }
    let before = config.searches.len();
    config.searches.retain(|s| s.len() <= MAX_SEARCH_PATH);
    exceeded |= config.searches.len() != before;
    while config.searches.join(" ").len() > MAX_SEARCH_LIST_CHARS {
        config.searches.pop();
        exceeded = true;
    }
    if exceeded {
        notices.push(Notice::pod(
            "DNSConfigForming",
            format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                config.searches.join(" ")
            ),
        ));
    }
    config
}

/// kubelet's `GeneratePodHostNameAndDomain`: `spec.hostname` or the pod's
/// name (cut to 63 characters), and `<subdomain>.<ns>.svc.<domain>` with
/// a subdomain. The error is kubelet's.
pub fn hostname_and_domain(pod: &Pod, cluster_domain: &str) -> Result<(String, String), String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut hostname = name.clone();
    if let Some(h) = spec.hostname.filter(|h| !h.is_empty()) {
        if !crate::runtime::process::is_dns1123_label(&h) {
            return Err(format!(
                "pod Hostname {h:?} is not a valid DNS label: {LABEL_MSG}"
            ));
        }
        hostname = h;
    }
    if hostname.len() > 63 {
        hostname.truncate(63);
        hostname = hostname.trim_end_matches(['-', '.']).to_string();
        if hostname.is_empty() {
            return Err(format!("hostname for pod {name:?} was invalid: {name:?}"));
        }
    }
    if !crate::env::is_dns1123_subdomain(&hostname) {
        // A pod name is a subdomain; one that is not cannot go in a file.
        return Err(format!(
            "pod Hostname {hostname:?} is not a valid DNS label: {LABEL_MSG}"
        ));
    }
    let mut domain = String::new();
    if let Some(sub) = spec.subdomain.filter(|s| !s.is_empty()) {
        if !crate::runtime::process::is_dns1123_label(&sub) {
            return Err(format!(
                "pod Subdomain {sub:?} is not a valid DNS label: {LABEL_MSG}"
            ));
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        domain = format!("{sub}.{ns}.svc.{cluster_domain}");
    }
    Ok((hostname, domain))
}

/// The `# Entries added by HostAliases.` section; entries kube's
/// apiserver would refuse are left out with a warning.
fn host_aliases(aliases: &[HostAlias], notices: &mut Vec<Notice>) -> String {
    let mut lines = String::new();
    for (i, a) in aliases.iter().enumerate() {
        if a.ip.parse::<IpAddr>().is_err() {
            notices.push(Notice::pod(
                "InvalidHostAliases",
                invalid(&format!("spec.hostAliases[{i}].ip"), &a.ip, IP_MSG),
            ));
            continue;
        }
        for (j, h) in a.hostnames.iter().flatten().enumerate() {
            if !is_subdomain(h) {
                notices.push(Notice::pod(
                    "InvalidHostAliases",
                    invalid(
                        &format!("spec.hostAliases[{i}].hostnames[{j}]"),
                        h,
                        SUBDOMAIN_MSG,
                    ),
                ));
                continue;
            }
            lines.push_str(&format!("{}\t{h}\n", a.ip));
        }
    }
    if aliases.is_empty() {
        return String::new();
    }
    format!("\n# Entries added by HostAliases.\n{lines}")
}

/// The pod's hosts file (kubelet's `ensureHostsFile`): for a pod on the
/// host's network the node's `/etc/hosts` (`node_hosts`), else the
/// localhost entries and one line per pod IP with its hostname; then the
/// host aliases.
pub fn hosts_file(
    pod: &Pod,
    ips: &[String],
    hostname: &str,
    domain: &str,
    node_hosts: &Path,
    notices: &mut Vec<Notice>,
) -> std::io::Result<String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = String::new();
    if spec.host_network == Some(true) {
        let mut node = String::new();
        std::fs::File::open(node_hosts)
            .and_then(|f| f.take(MAX_RESOLV_CONF).read_to_string(&mut node))
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("open {}: {e}", node_hosts.display()))
            })?;
        out.push_str(MANAGED_HOSTS_HEADER_HOST_NETWORK);
        out.push_str(&node);
    } else {
        out.push_str(MANAGED_HOSTS_HEADER);
        out.push_str("127.0.0.1\tlocalhost\n");
        out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        out.push_str("fe00::0\tip6-localnet\n");
        out.push_str("fe00::0\tip6-mcastprefix\n");
        out.push_str("fe00::1\tip6-allnodes\n");
        out.push_str("fe00::2\tip6-allrouters\n");
        for ip in ips {
            if domain.is_empty() {
                out.push_str(&format!("{ip}\t{hostname}\n"));
            } else {
                out.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n"));
            }
        }
    }
    out.push_str(&host_aliases(
        spec.host_aliases.as_deref().unwrap_or_default(),
        notices,
    ));
    Ok(out)
}

/// Writes `text` to `path` in place (0644), unless it already holds it:
/// a container's bind mount holds the file's inode, so an update must not
/// replace it.
fn write_in_place(path: &Path, text: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
        && std::fs::read(path).is_ok_and(|old| old == text)
    {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o644)
        .open(path)?;
    f.write_all(text)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
}

/// Writes the pod's resolv.conf and hosts file into `pod_dir` for a pod
/// whose sandbox has `ip`; the events to record, or kubelet's reason the
/// sandbox cannot be made.
pub fn write_pod_files(
    configurer: &Configurer,
    pod: &Pod,
    ip: &str,
    pod_dir: &Path,
) -> Result<Vec<Notice>, String> {
    let (config, mut notices) = configurer.pod_dns(pod).map_err(|e| e.to_string())?;
    let resolv = match config.render() {
        Some(text) => text,
        // An empty configuration: the host's, as containerd copies it.
        None => std::fs::read_to_string(RESOLV_CONF_TARGET).unwrap_or_default(),
    };
    let (hostname, domain) = hostname_and_domain(pod, &configurer.cluster_domain)?;
    let hosts = hosts_file(
        pod,
        &[ip.to_string()],
        &hostname,
        &domain,
        Path::new(NODE_HOSTS),
        &mut notices,
    )
    .map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| {
        let path = pod_dir.join(name);
        write_in_place(&path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(RESOLV_CONF, &resolv)?;
    write(ETC_HOSTS, &hosts)?;
    Ok(notices)
}

/// The binds of the pod's resolv.conf and hosts file into `container`'s
/// view: those written in `pod_dir`, where no volume of the container is
/// mounted. `/etc/hosts` is writable, as kube mounts it; `/etc/resolv.conf`
/// read-only with `readOnlyRootFilesystem`, as containerd mounts it.
pub fn container_mounts(pod_dir: &Path, container: &Container) -> Vec<Mount> {
    let read_only_root = container
        .security_context
        .as_ref()
        .and_then(|s| s.read_only_root_filesystem)
        .unwrap_or(false);
    let taken = |target: &str| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| Path::new(&m.mount_path) == Path::new(target))
    };
    [
        (ETC_HOSTS, ETC_HOSTS_TARGET, false),
        (RESOLV_CONF, RESOLV_CONF_TARGET, read_only_root),
    ]
    .into_iter()
    .filter(|(name, target, _)| pod_dir.join(name).is_file() && !taken(target))
    .map(|(name, target, read_only)| Mount {
        source: pod_dir.join(name),
        beneath: None,
        target: PathBuf::from(target),
        read_only,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u1"},
            "spec": spec
        }))
        .unwrap()
    }

    fn configurer(dir: &Path, host: &str, cluster: bool) -> Configurer {
        let path = dir.join("resolv.conf");
        std::fs::write(&path, host).unwrap();
        Configurer {
            cluster_dns: if cluster {
                vec!["127.0.0.10".parse().unwrap()]
            } else {
                Vec::new()
            },
            cluster_domain: "cluster.local".into(),
            resolv_conf: Some(path),
        }
    }

    const HOST: &str = "# the node's\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch corp.example. lab.example\noptions timeout:2 rotate\n";

    #[test]
    fn resolv_conf_is_parsed_as_kubelet_does() {
        let c = parse_resolv_conf("nameserver 1.1.1.1\nsearch a b\nnameserver\n#nameserver 9.9.9.9\nsearch c.\noptions x y:1\nnameserver 2.2.2.2 extra\n");
        assert_eq!(c.servers, ["1.1.1.1", "2.2.2.2"]);
        assert_eq!(c.searches, ["c"]);
        assert_eq!(c.options, ["x", "y:1"]);
    }

    #[test]
    fn policies_form_their_configurations() {
        let dir = tempfile::tempdir().unwrap();
        let c = configurer(dir.path(), HOST, true);
        let (first, notices) = c.pod_dns(&pod(json!({"containers": []}))).unwrap();
        assert!(notices.is_empty(), "{notices:?}");
        assert_eq!(
            first.render().unwrap(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n\
             nameserver 127.0.0.10\noptions ndots:5\n"
        );
        let host = "search corp.example lab.example\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions timeout:2 rotate\n";
        let (default, _) = c
            .pod_dns(&pod(json!({"containers": [], "dnsPolicy": "Default"})))
            .unwrap();
        assert_eq!(default.render().unwrap(), host);
        // ClusterFirst on the host's network is Default; WithHostNet is not.
        let (hn, _) = c
            .pod_dns(&pod(json!({"containers": [], "hostNetwork": true})))
            .unwrap();
        assert_eq!(hn, default);
        let (hn, _) = c
            .pod_dns(&pod(json!({"containers": [], "hostNetwork": true,
                "dnsPolicy": "ClusterFirstWithHostNet"})))
            .unwrap();
        assert_eq!(hn, first);
        let (none, notices) = c
            .pod_dns(&pod(json!({"containers": [], "dnsPolicy": "None",
                "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.example"],
                    "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}})))
            .unwrap();
        assert!(notices.is_empty(), "{notices:?}");
        assert_eq!(
            none.render().unwrap(),
            "search a.example\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"
        );
        // No cluster domain: only the node's search domains.
        let bare = Configurer {
            cluster_domain: String::new(),
            ..c.clone()
        };
        let (b, _) = bare.pod_dns(&pod(json!({"containers": []}))).unwrap();
        assert_eq!(b.searches, ["corp.example", "lab.example"]);
    }

    #[test]
    fn the_node_resolv_conf_is_checked_against_the_limits() {
        let dir = tempfile::tempdir().unwrap();
        let c = configurer(dir.path(), HOST, true);
        assert_eq!(c.check_resolv_conf(), None);
        let many: Vec<String> = (0..30).map(|i| format!("d{i}.example")).collect();
        let c = configurer(dir.path(), &format!("search {}\n", many.join(" ")), true);
        let path = dir.path().join("resolv.conf");
        assert_eq!(
            c.check_resolv_conf().unwrap(),
            format!(
                "Resolv.conf file '{}' contains search line consisting of more than 29 domains!",
                path.display()
            )
        );
        let none = Configurer {
            resolv_conf: None,
            ..c.clone()
        };
        assert_eq!(none.check_resolv_conf(), None);
        let missing = Configurer {
            resolv_conf: Some(dir.path().join("nope")),
            ..c
        };
        assert!(missing.check_resolv_conf().unwrap().starts_with("open "));
    }

    #[test]
    fn dns_config_merges_into_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let c = configurer(dir.path(), HOST, true);
        let (got, notices) = c
            .pod_dns(&pod(json!({"containers": [], "dnsConfig": {
                "nameservers": ["127.0.0.10", "8.8.8.8"],
                "searches": ["svc.cluster.local", "extra.example"],
                "options": [{"name": "ndots", "value": "1"}, {"name": "single-request"}]
            }})))
            .unwrap();
        assert!(notices.is_empty(), "{notices:?}");
        assert_eq!(got.servers, ["127.0.0.10", "8.8.8.8"]);
        assert_eq!(
            got.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "lab.example",
                "extra.example"
            ]
        );
        assert_eq!(got.options, ["ndots:1", "single-request"]);
    }

    #[test]
    fn limits_cut_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let c = configurer(dir.path(), HOST, false);
        let searches: Vec<String> = (0..40).map(|i| format!("s{i}.example")).collect();
        let (got, notices) = c
            .pod_dns(&pod(
                json!({"containers": [], "dnsPolicy": "Default", "dnsConfig": {
                    "nameservers": ["1.1.1.1", "2.2.2.2"],
                    "searches": searches,
                }}),
            ))
            .unwrap();
        assert_eq!(got.servers, ["10.0.0.2", "10.0.0.3", "1.1.1.1"]);
        assert_eq!(got.searches.len(), MAX_SEARCH_PATHS);
        assert_eq!(got.searches[..2], ["corp.example", "lab.example"]);
        let reasons: Vec<_> = notices.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, ["DNSConfigForming", "DNSConfigForming"]);
        assert_eq!(
            notices[0].message,
            "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: 10.0.0.2 10.0.0.3 1.1.1.1"
        );
        assert!(notices[1]
            .message
            .starts_with("Search Line limits were exceeded"));
        // 2048 characters of search line.
        let long: Vec<String> = (0..12).map(|i| format!("{i:0>200}.example")).collect();
        let (got, _) = c
            .pod_dns(&pod(
                json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["1.1.1.1"], "searches": long}}),
            ))
            .unwrap();
        assert!(got.searches.join(" ").len() <= MAX_SEARCH_LIST_CHARS);
        assert_eq!(got.searches.len(), 9);
    }

    #[test]
    fn cluster_first_without_cluster_dns_falls_back_to_default() {
        let dir = tempfile::tempdir().unwrap();
        let c = configurer(dir.path(), HOST, false);
        let (got, notices) = c.pod_dns(&pod(json!({"containers": []}))).unwrap();
        assert_eq!(got.servers, ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(notices.len(), 2);
        assert!(notices[0].about_node && notices[0].reason == "MissingClusterDNS");
        assert_eq!(
            notices[1].message,
            "pod: \"web-0_shop(u1)\". kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy."
        );
        // --resolv-conf "": a resolver on this machine.
        let none = Configurer {
            resolv_conf: None,
            ..c
        };
        let (got, _) = none
            .pod_dns(&pod(json!({"containers": [], "dnsPolicy": "Default"})))
            .unwrap();
        assert_eq!(got.render().unwrap(), "search .\nnameserver 127.0.0.1\n");
        // An unreadable --resolv-conf fails the sandbox.
        let missing = Configurer {
            resolv_conf: Some(dir.path().join("nope")),
            ..none
        };
        assert!(missing.pod_dns(&pod(json!({"containers": []}))).is_err());
    }

    #[test]
    fn values_that_would_add_lines_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let c = configurer(dir.path(), HOST, true);
        let (got, notices) = c
            .pod_dns(&pod(
                json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                    "nameservers": ["1.1.1.1\nnameserver 6.6.6.6", "9.9.9.9"],
                    "searches": ["ok.example.", "bad\nnameserver 6.6.6.6", "."],
                    "options": [{"name": "ndots", "value": "1\nnameserver 6.6.6.6"}, {"name": ""}]
                }}),
            ))
            .unwrap();
        let text = got.render().unwrap();
        assert_eq!(
            text, "search ok.example. .\nnameserver 9.9.9.9\n",
            "{notices:?}"
        );
        assert_eq!(notices.len(), 4, "{notices:?}");
        assert!(notices[0].message.starts_with(
            "spec.dnsConfig.nameservers[0]: Invalid value: \"1.1.1.1\\nnameserver 6.6.6.6\": must be a valid IP address"
        ));
        assert_eq!(
            notices[3].message,
            "spec.dnsConfig.options[1]: Required value: must not be empty"
        );
        // None without dnsConfig: kube's 422 as a warning, an empty config.
        let (got, notices) = c
            .pod_dns(&pod(json!({"containers": [], "dnsPolicy": "None"})))
            .unwrap();
        assert!(got.render().is_none());
        assert_eq!(
            notices[0].message,
            "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"
        );
        let (_, notices) = c
            .pod_dns(&pod(json!({"containers": [], "dnsPolicy": "Bogus"})))
            .unwrap();
        assert!(notices[0]
            .message
            .starts_with("spec.dnsPolicy: Unsupported value: \"Bogus\""));
    }

    #[test]
    fn hosts_files_as_kubelet_writes_them() {
        let p = pod(
            json!({"containers": [], "hostname": "db", "subdomain": "backend",
            "hostAliases": [
                {"ip": "127.0.0.5", "hostnames": ["foo.local", "bar"]},
                {"ip": "not-an-ip", "hostnames": ["x"]},
                {"ip": "10.1.2.3", "hostnames": ["ok", "bad\n6.6.6.6 evil"]}
            ]}),
        );
        let (h, d) = hostname_and_domain(&p, "cluster.local").unwrap();
        assert_eq!(
            (h.as_str(), d.as_str()),
            ("db", "backend.shop.svc.cluster.local")
        );
        let mut notices = Vec::new();
        let text = hosts_file(
            &p,
            &["127.1.0.7".into()],
            &h,
            &d,
            Path::new("/nonexistent"),
            &mut notices,
        )
        .unwrap();
        assert_eq!(
            text,
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
             127.1.0.7\tdb.backend.shop.svc.cluster.local\tdb\n\
             \n# Entries added by HostAliases.\n127.0.0.5\tfoo.local\n127.0.0.5\tbar\n10.1.2.3\tok\n"
        );
        assert_eq!(notices.len(), 2, "{notices:?}");
        // Without a subdomain: the hostname alone; the pod's name by default.
        let plain = pod(json!({"containers": []}));
        assert_eq!(
            hostname_and_domain(&plain, "cluster.local").unwrap(),
            ("web-0".to_string(), String::new())
        );
        let long = pod(json!({"containers": [], "hostname": "a".repeat(64)}));
        assert!(hostname_and_domain(&long, "cluster.local")
            .unwrap_err()
            .starts_with("pod Hostname \"aaaa"));
        let bad = pod(json!({"containers": [], "subdomain": "a.b"}));
        assert!(hostname_and_domain(&bad, "cluster.local")
            .unwrap_err()
            .starts_with("pod Subdomain \"a.b\" is not a valid DNS label"));
        // On the host's network: the node's file, then the aliases.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hosts"), "127.0.0.1 localhost node\n").unwrap();
        let hn = pod(json!({"containers": [], "hostNetwork": true,
            "hostAliases": [{"ip": "10.0.0.9", "hostnames": ["db"]}]}));
        let text = hosts_file(
            &hn,
            &["127.1.0.7".into()],
            "web-0",
            "",
            &dir.path().join("hosts"),
            &mut notices,
        )
        .unwrap();
        assert_eq!(
            text,
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost node\n\
             \n# Entries added by HostAliases.\n10.0.0.9\tdb\n"
        );
    }

    #[test]
    fn files_are_written_in_place_and_mounted_unless_taken() {
        let dir = tempfile::tempdir().unwrap();
        let c = configurer(dir.path(), HOST, true);
        let pod_dir = dir.path().join("pod");
        std::fs::create_dir(&pod_dir).unwrap();
        let p = pod(json!({"containers": []}));
        write_pod_files(&c, &p, "127.1.0.9", &pod_dir).unwrap();
        let resolv = pod_dir.join(RESOLV_CONF);
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&resolv).unwrap().ino();
        assert!(std::fs::read_to_string(&resolv)
            .unwrap()
            .contains("nameserver 127.0.0.10"));
        let hosts = std::fs::read_to_string(pod_dir.join(ETC_HOSTS)).unwrap();
        assert!(hosts.contains("127.1.0.9\tweb-0\n"), "{hosts}");
        // Another configuration rewrites the same file.
        let other = Configurer {
            cluster_dns: vec!["127.0.0.11".parse().unwrap()],
            ..c
        };
        write_pod_files(&other, &p, "127.1.0.9", &pod_dir).unwrap();
        assert!(std::fs::read_to_string(&resolv)
            .unwrap()
            .contains("nameserver 127.0.0.11"));
        assert_eq!(std::fs::metadata(&resolv).unwrap().ino(), inode);
        let container: Container = serde_json::from_value(json!({"name": "c",
            "securityContext": {"readOnlyRootFilesystem": true},
            "volumeMounts": [{"name": "v", "mountPath": "/etc/hosts/"}]}))
        .unwrap();
        let mounts = container_mounts(&pod_dir, &container);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].target, Path::new("/etc/resolv.conf"));
        assert!(mounts[0].read_only);
        assert!(container_mounts(&dir.path().join("none"), &container).is_empty());
    }
}
