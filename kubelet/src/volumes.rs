//! Pod volumes, materialised by the kubelet under the pod's directory
//! before its first container starts (kubelet's volume manager), and
//! mounted into each container by [`crate::runtime::mounts`].
//!
//! ```text
//! <pod dir>/volumes/<name>/                    one directory per volume
//!   emptyDir             0777 directory (medium Memory: a tmpfs, size = sizeLimit)
//!   configMap, secret,   AtomicWriter layout, as kubelet's:
//!   downwardAPI,           ..2026_12_07_07_04_46.1234/<paths>   one payload
//!   projected              ..data -> ..2026_12_07_07_04_46.1234  swapped by rename
//!                          <top-level name> -> ..data/<top-level name>
//! hostPath               not under the pod directory: the host path itself,
//!                        checked against `type` (and created for *OrCreate)
//! ```
//!
//! A payload update writes a new timestamped directory, points a temporary
//! `..data_tmp` symlink at it and renames that over `..data`: a reader sees
//! the old payload or the new one, never a mix. The pod worker resyncs the
//! pod's ConfigMap, Secret, downward API and projected volumes every
//! [`RESYNC`] (kubelet's is about a minute), so an updated object reaches
//! the mounted files; downward API files (alone or projected) are
//! rewritten as soon as the pod's labels, annotations or IP change on the
//! worker's watch of it; a ServiceAccount token is requested from the
//! apiserver (TokenRequest bound to the pod) and requested again at 80 %
//! of its life, as kubelet's token manager does.
//!
//! Secrets are written to disk under the pod's private directory (kubelet
//! uses a tmpfs); only the container's mount namespace shows them.
//! Ownership follows kubelet: files belong to root, and with
//! `securityContext.fsGroup` to that group (group-readable; emptyDir and
//! hostPath directories are left as they are but for the group).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_controllers::scheduler::{parse_milli, parse_units};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tokio::sync::watch;

use crate::runtime::mounts::Mount;

/// How often a pod's ConfigMap, Secret, downward API and projected volumes
/// are rewritten from their sources.
pub const RESYNC: Duration = Duration::from_secs(10);

/// The name prefix of the ServiceAccount admission's token volume.
pub const API_ACCESS_PREFIX: &str = "kube-api-access-";
/// Where the ServiceAccount admission mounts its token volume.
pub const API_ACCESS_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// kubelet's default mode of ConfigMap, Secret, downward API and projected
/// files (0644).
const DEFAULT_MODE: u32 = 0o644;
/// The longest path a volume item may have, and the longest component.
const MAX_PATH: usize = 4096;
const MAX_COMPONENT: usize = 255;

/// The directory of volume `name` of the pod whose directory is `pod_dir`.
pub fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

/// Whether `volume` is the ServiceAccount admission's token volume mounted
/// where the admission mounts it.
pub fn is_api_access(volume: &str, mount_path: &str) -> bool {
    volume.starts_with(API_ACCESS_PREFIX) && mount_path == API_ACCESS_PATH
}

/// kubelet's AtomicWriter `validatePath`: a relative path with no `..`
/// component, at most 4096 bytes, components at most 255.
pub fn validate_item_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("invalid path: must not be empty".into());
    }
    if path.len() > MAX_PATH {
        return Err(format!(
            "invalid path: must be less than or equal to {MAX_PATH} characters"
        ));
    }
    if path.starts_with('/') {
        return Err("invalid path: must be relative path".into());
    }
    if path.starts_with("..") {
        return Err("invalid path: must not start with '..'".into());
    }
    for part in path.split('/') {
        if part == ".." {
            return Err("invalid path: must not contain '..'".into());
        }
        if part.len() > MAX_COMPONENT {
            return Err(format!(
                "invalid path: each path segment must be less than or equal to {MAX_COMPONENT} characters"
            ));
        }
    }
    Ok(())
}

/// kubelet's checks of a `volumeMounts[].subPath` (`makeMounts`): not
/// absolute, no `..` component.
pub fn validate_sub_path(sub_path: &str) -> Result<PathBuf, String> {
    if sub_path.starts_with('/') {
        return Err(format!(
            "error SubPath `{sub_path}` must not be an absolute path"
        ));
    }
    let mut out = PathBuf::new();
    for c in Path::new(sub_path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "unable to provision SubPath `{sub_path}`: must not contain '..'"
                ))
            }
        }
    }
    Ok(out)
}

/// One file of a volume payload: its bytes and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileData {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// A whole payload: relative path → file.
pub type Payload = BTreeMap<String, FileData>;

/// Writes `payload` into `dir` as kubelet's AtomicWriter does (see the
/// module doc); nothing is written when `dir` already holds exactly it.
/// Files get `gid` as their group when given.
pub fn write_atomic(dir: &Path, payload: &Payload, gid: Option<u32>) -> std::io::Result<bool> {
    for path in payload.keys() {
        validate_item_path(path).map_err(std::io::Error::other)?;
    }
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join("..data");
    let old = std::fs::read_link(&data_link).ok();
    if let Some(old) = &old {
        if holds(&dir.join(old), payload) {
            return Ok(false);
        }
    }
    let stamp = Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S").to_string();
    let ts_name = format!("..{stamp}.{}", rand::random::<u32>());
    let ts = dir.join(&ts_name);
    std::fs::create_dir(&ts)?;
    std::fs::set_permissions(&ts, std::fs::Permissions::from_mode(0o755))?;
    for (path, file) in payload {
        let target = ts.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, &file.data)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode & 0o7777))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&target, None, Some(gid))?;
        }
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&ts_name, &tmp_link)?;
    std::fs::rename(&tmp_link, &data_link)?;
    // The user-visible names: one symlink per top-level component.
    let wanted: std::collections::BTreeSet<String> = payload
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || wanted.contains(&name) {
            continue;
        }
        let _ = std::fs::remove_file(entry.path());
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// Whether the payload directory `ts` holds exactly `payload`.
fn holds(ts: &Path, payload: &Payload) -> bool {
    let mut found = 0;
    let all = payload.iter().all(|(path, file)| {
        let p = ts.join(path);
        let same_mode = std::fs::symlink_metadata(&p)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o7777 == file.mode & 0o7777);
        found += 1;
        same_mode && std::fs::read(&p).is_ok_and(|d| d == file.data)
    });
    all && found == count_files(ts)
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            _ => 1,
        })
        .sum()
}

/// A ServiceAccount token held for one projected source.
#[derive(Debug, Clone)]
struct Token {
    token: String,
    issued: Timestamp,
    expires: Timestamp,
}

impl Token {
    /// kubelet's token manager: refresh past 80 % of the life, or past 24 h.
    fn needs_refresh(&self, now: Timestamp) -> bool {
        let life = self.expires.as_second() - self.issued.as_second();
        let age = now.as_second() - self.issued.as_second();
        age * 5 >= life * 4 || age >= 24 * 3600
    }
}

/// Stops a pod's volume resync when dropped.
pub struct Resync(tokio::task::JoinHandle<()>);

impl Drop for Resync {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The volumes of one pod: sets them up, keeps them current, and knows
/// where each is on disk.
pub struct PodVolumes {
    client: Client,
    pod: Pod,
    pod_dir: PathBuf,
    host_ip: String,
    /// The node's allocatable cpu (milliCPU) and memory (bytes): what a
    /// `resourceFieldRef` to an unset limit reports, as kubelet does.
    node_allocatable: (i64, i64),
    /// Tokens by `(volume, source index)`, reused until they need a refresh.
    tokens: Mutex<HashMap<(String, usize), Token>>,
    /// The pod as last seen on the watch: what downward API files show
    /// (labels and annotations change; the spec's volumes do not).
    current: Mutex<Arc<Pod>>,
}

impl PodVolumes {
    /// The volumes of `pod`, whose directory is `pod_dir`.
    pub fn new(
        client: Client,
        pod: &Pod,
        pod_dir: &Path,
        host_ip: &str,
        node_allocatable: (i64, i64),
    ) -> PodVolumes {
        PodVolumes {
            client,
            pod: pod.clone(),
            pod_dir: pod_dir.to_path_buf(),
            host_ip: host_ip.to_string(),
            node_allocatable,
            tokens: Mutex::new(HashMap::new()),
            current: Mutex::new(Arc::new(pod.clone())),
        }
    }

    fn volumes(&self) -> &[Volume] {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_deref())
            .unwrap_or_default()
    }

    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    fn fs_group(&self) -> Option<u32> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.fs_group)
            .and_then(|g| u32::try_from(g).ok())
    }

    /// Sets up every volume (the first time) or rewrites the object-backed
    /// ones (later). The error is kubelet's `FailedMount` message.
    pub async fn sync(&self) -> Result<(), String> {
        self.sync_matching(|_| true).await
    }

    async fn sync_matching(&self, wanted: impl Fn(&Volume) -> bool) -> Result<(), String> {
        for v in self.volumes().iter().filter(|v| wanted(v)) {
            self.sync_one(v)
                .await
                .map_err(|e| format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name))?;
        }
        Ok(())
    }

    /// Resyncs the volumes every [`RESYNC`] until the returned guard is
    /// dropped; and, as soon as the pod on `pods` (the worker's watch of
    /// it) shows other labels, annotations or pod IP, rewrites the
    /// volumes with downward API files (kubelet remounts them on each pod
    /// update).
    pub fn keep_synced(self: Arc<Self>, mut pods: watch::Receiver<Option<Arc<Pod>>>) -> Resync {
        Resync(tokio::spawn(async move {
            let mut watching = true;
            let mut next = tokio::time::Instant::now() + RESYNC;
            loop {
                let changed = tokio::select! {
                    () = tokio::time::sleep_until(next) => false,
                    r = pods.changed(), if watching => {
                        if r.is_err() {
                            // The worker is gone: the timer alone, until dropped.
                            watching = false;
                            continue;
                        }
                        true
                    }
                };
                let synced = if changed {
                    let Some(pod) = pods.borrow_and_update().clone() else {
                        continue;
                    };
                    if !self.observe(pod) {
                        continue;
                    }
                    self.sync_matching(reads_pod).await
                } else {
                    next = tokio::time::Instant::now() + RESYNC;
                    self.sync().await
                };
                if let Err(e) = synced {
                    tracing::warn!(pod = ?self.pod.metadata.name, "volume resync: {e}");
                }
            }
        }))
    }

    /// Takes `pod` as the current one; whether what downward API files
    /// show of it changed.
    fn observe(&self, pod: Arc<Pod>) -> bool {
        let shown = |p: &Pod| {
            (
                p.metadata.labels.clone(),
                p.metadata.annotations.clone(),
                p.status.as_ref().and_then(|s| s.pod_ip.clone()),
            )
        };
        let mut current = self.current.lock().expect("current pod lock");
        let changed = shown(&current) != shown(&pod);
        *current = pod;
        changed
    }

    async fn sync_one(&self, v: &Volume) -> Result<(), String> {
        if !crate::runtime::process::is_plain_name(&v.name) {
            return Err(format!("volume name {:?} is not a plain name", v.name));
        }
        let dir = volume_dir(&self.pod_dir, &v.name);
        let io = |e: std::io::Error| format!("{}: {e}", dir.display());
        if let Some(e) = &v.empty_dir {
            if dir.exists() {
                return Ok(());
            }
            std::fs::create_dir_all(&dir).map_err(io)?;
            if e.medium.as_deref() == Some("Memory") {
                let mut options = "mode=0777".to_string();
                if let Some(limit) = &e.size_limit {
                    let bytes = parse_units(&limit.0)
                        .map_err(|_| format!("sizeLimit {:?} is not a quantity", limit.0))?;
                    options.push_str(&format!(",size={bytes}"));
                }
                mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(options.as_str()),
                )
                .map_err(|e| format!("mounting a tmpfs at {}: {e}", dir.display()))?;
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
            if let Some(gid) = self.fs_group() {
                std::os::unix::fs::chown(&dir, None, Some(gid)).map_err(io)?;
            }
            return Ok(());
        }
        if let Some(h) = &v.host_path {
            return check_host_path(&h.path, h.type_.as_deref().unwrap_or_default());
        }
        let payload = if let Some(c) = &v.config_map {
            let optional = c.optional.unwrap_or(false);
            let data = self.config_map(&c.name, optional).await?;
            let mode = c.default_mode.map_or(DEFAULT_MODE, |m| m as u32);
            project(data, c.items.as_deref(), mode, optional, "configmap")?
        } else if let Some(s) = &v.secret {
            let optional = s.optional.unwrap_or(false);
            let name = s.secret_name.clone().unwrap_or_default();
            let data = self.secret(&name, optional).await?;
            let mode = s.default_mode.map_or(DEFAULT_MODE, |m| m as u32);
            project(data, s.items.as_deref(), mode, optional, "secret")?
        } else if let Some(d) = &v.downward_api {
            let mode = d.default_mode.map_or(DEFAULT_MODE, |m| m as u32);
            self.downward(d.items.as_deref().unwrap_or_default(), mode)?
        } else if let Some(p) = &v.projected {
            let mode = p.default_mode.map_or(DEFAULT_MODE, |m| m as u32);
            let mut all = Payload::new();
            for (i, source) in p.sources.iter().flatten().enumerate() {
                let part = if let Some(c) = &source.config_map {
                    let optional = c.optional.unwrap_or(false);
                    let data = self.config_map(&c.name, optional).await?;
                    project(data, c.items.as_deref(), mode, optional, "configmap")?
                } else if let Some(s) = &source.secret {
                    let optional = s.optional.unwrap_or(false);
                    let data = self.secret(&s.name, optional).await?;
                    project(data, s.items.as_deref(), mode, optional, "secret")?
                } else if let Some(d) = &source.downward_api {
                    self.downward(d.items.as_deref().unwrap_or_default(), mode)?
                } else if let Some(t) = &source.service_account_token {
                    validate_item_path(&t.path)?;
                    let token = self
                        .token(&v.name, i, t.audience.as_deref(), t.expiration_seconds)
                        .await?;
                    Payload::from([(
                        t.path.clone(),
                        FileData {
                            data: token.into_bytes(),
                            mode,
                        },
                    )])
                } else {
                    return Err("projected source not supported by this kubelet".into());
                };
                all.extend(part);
            }
            all
        } else {
            return Err("volume type not supported by this kubelet (supported: emptyDir, configMap, secret, downwardAPI, projected, hostPath)".into());
        };
        write_atomic(&dir, &payload, self.fs_group()).map_err(io)?;
        Ok(())
    }

    /// A ConfigMap's data and binaryData (`None`: absent and optional).
    async fn config_map(
        &self,
        name: &str,
        optional: bool,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), self.namespace());
        match api.get_opt(name).await {
            Ok(Some(cm)) => {
                let mut out: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                out.extend(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                Ok(Some(out))
            }
            Ok(None) if optional => Ok(None),
            Ok(None) => Err(format!("configmap {name:?} not found")),
            Err(kube::Error::Api(s)) => Err(s.message),
            Err(e) => Err(format!("couldn't get configMap {name:?}: {e}")),
        }
    }

    /// A Secret's data (`None`: absent and optional).
    async fn secret(
        &self,
        name: &str,
        optional: bool,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), self.namespace());
        match api.get_opt(name).await {
            Ok(Some(s)) => Ok(Some(
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
            )),
            Ok(None) if optional => Ok(None),
            Ok(None) => Err(format!("secret {name:?} not found")),
            Err(kube::Error::Api(s)) => Err(s.message),
            Err(e) => Err(format!("couldn't get secret {name:?}: {e}")),
        }
    }

    /// A token for the pod's ServiceAccount, bound to the pod, from the
    /// apiserver's TokenRequest (reused until it needs a refresh).
    async fn token(
        &self,
        volume: &str,
        index: usize,
        audience: Option<&str>,
        expiration: Option<i64>,
    ) -> Result<String, String> {
        let key = (volume.to_string(), index);
        let now = Timestamp::now();
        if let Some(t) = self.tokens.lock().expect("tokens lock").get(&key) {
            if !t.needs_refresh(now) {
                return Ok(t.token.clone());
            }
        }
        let sa = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audience.filter(|a| !a.is_empty()).map(|a| vec![a]),
                "expirationSeconds": expiration.unwrap_or(3600),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod.metadata.name,
                    "uid": self.pod.metadata.uid,
                },
            },
        }))
        .map_err(|e| e.to_string())?;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), self.namespace());
        let issued = api
            .create_token_request(&sa, &PostParams::default(), &request)
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) => format!("failed to fetch token: {}", s.message),
                e => format!("failed to fetch token: {e}"),
            })?;
        let status = issued
            .status
            .ok_or("failed to fetch token: the TokenRequest has no status")?;
        let expires = status.expiration_timestamp.0;
        let token = Token {
            token: status.token.clone(),
            issued: now,
            expires,
        };
        self.tokens.lock().expect("tokens lock").insert(key, token);
        Ok(status.token)
    }

    /// The downward API files of `items`, from the current pod.
    fn downward(&self, items: &[DownwardAPIVolumeFile], mode: u32) -> Result<Payload, String> {
        let pod = self.current.lock().expect("current pod lock").clone();
        let mut out = Payload::new();
        let pod_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        for item in items {
            validate_item_path(&item.path)?;
            let value = if let Some(f) = &item.field_ref {
                let meta = &pod.metadata;
                match f.field_path.as_str() {
                    "metadata.labels" => format_map(meta.labels.as_ref()),
                    "metadata.annotations" => format_map(meta.annotations.as_ref()),
                    path => crate::env::field_value(&pod, &pod_ip, &self.host_ip, path)?,
                }
            } else if let Some(r) = &item.resource_field_ref {
                let spec = pod.spec.as_ref();
                let container = spec
                    .into_iter()
                    .flat_map(|s| {
                        s.containers
                            .iter()
                            .chain(s.init_containers.iter().flatten())
                    })
                    .find(|c| Some(c.name.as_str()) == r.container_name.as_deref())
                    .ok_or_else(|| {
                        format!(
                            "resourceFieldRef: container {:?} not found",
                            r.container_name.as_deref().unwrap_or_default()
                        )
                    })?;
                let divisor = r.divisor.as_ref().map(|d| d.0.as_str());
                resource_value(container, &r.resource, divisor, self.node_allocatable)?
            } else {
                return Err(format!(
                    "downwardAPI item {:?} has neither fieldRef nor resourceFieldRef",
                    item.path
                ));
            };
            out.insert(
                item.path.clone(),
                FileData {
                    data: value.into_bytes(),
                    mode: item.mode.map_or(mode, |m| m as u32),
                },
            );
        }
        Ok(out)
    }
}

/// Whether volume `v` shows the pod itself (downward API files, alone or
/// projected).
fn reads_pod(v: &Volume) -> bool {
    v.downward_api.is_some()
        || v.projected
            .as_ref()
            .is_some_and(|p| p.sources.iter().flatten().any(|s| s.downward_api.is_some()))
}

/// kubelet's `fieldpath.FormatMap`: `key="value"` lines, sorted.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    let mut out = String::new();
    for (k, v) in m.into_iter().flatten() {
        out.push_str(&format!("{k}={v:?}\n"));
    }
    out.trim_end_matches('\n').to_string()
}

/// A `resourceFieldRef` value: the container's limit or request divided by
/// `divisor` (rounded up, as kubelet's `ExtractContainerResourceValue`); an
/// unset limit is the node's allocatable.
fn resource_value(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
    node: (i64, i64),
) -> Result<String, String> {
    let (list, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {resource:?}"))?;
    let res = c.resources.as_ref();
    let quantities = match list {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported container resource : {resource:?}")),
    };
    let set = quantities.and_then(|q| q.get(name)).map(|q| q.0.clone());
    let bad = |q: &str| format!("{resource}: {q:?} is not a quantity");
    let value = match name {
        "cpu" => match &set {
            Some(q) => parse_milli(q).map_err(|_| bad(q))?,
            None if list == "limits" => node.0,
            None => 0,
        },
        "memory" | "ephemeral-storage" => match &set {
            Some(q) => parse_units(q).map_err(|_| bad(q))?,
            None if list == "limits" && name == "memory" => node.1,
            None => 0,
        },
        _ => return Err(format!("unsupported container resource : {resource:?}")),
    };
    let divisor = divisor.unwrap_or("1");
    let per = if name == "cpu" {
        parse_milli(divisor).map_err(|_| bad(divisor))?
    } else {
        parse_units(divisor).map_err(|_| bad(divisor))?
    };
    if per <= 0 {
        return Err(format!("{resource}: divisor {divisor:?} must be positive"));
    }
    Ok(((value + per - 1) / per).to_string())
}

/// The files of a ConfigMap or Secret volume: every key, or the `items`
/// asked for (a missing key is an error unless `optional`).
fn project(
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
    kind: &str,
) -> Result<Payload, String> {
    let Some(data) = data else {
        return Ok(Payload::new());
    };
    let mut out = Payload::new();
    match items {
        None | Some([]) => {
            for (k, v) in data {
                validate_item_path(&k)?;
                out.insert(k, FileData { data: v, mode });
            }
        }
        Some(items) => {
            for item in items {
                validate_item_path(&item.path)?;
                let Some(v) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(format!(
                        "{kind} references non-existent config key: {}",
                        item.key
                    ));
                };
                out.insert(
                    item.path.clone(),
                    FileData {
                        data: v.clone(),
                        mode: item.mode.map_or(mode, |m| m as u32),
                    },
                );
            }
        }
    }
    Ok(out)
}

/// kubelet's hostPath type checks (`checkType`); `DirectoryOrCreate` makes
/// a 0755 directory, `FileOrCreate` an empty 0644 file.
fn check_host_path(path: &str, kind: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("hostPath {path:?} is not absolute"));
    }
    let meta = std::fs::metadata(p);
    let is =
        |want: fn(&std::fs::FileType) -> bool| meta.as_ref().is_ok_and(|m| want(&m.file_type()));
    let ok = match kind {
        "" => true,
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(p).map_err(|e| format!("{path}: {e}"))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("{path}: {e}"))?;
            }
            std::fs::metadata(p).is_ok_and(|m| m.is_dir())
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| format!("{path}: {e}"))?;
                }
                std::fs::write(p, b"").map_err(|e| format!("{path}: {e}"))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| format!("{path}: {e}"))?;
            }
            std::fs::metadata(p).is_ok_and(|m| m.is_file())
        }
        "Directory" => is(std::fs::FileType::is_dir),
        "File" => is(std::fs::FileType::is_file),
        "Socket" => is(std::fs::FileType::is_socket),
        "CharDevice" => is(std::fs::FileType::is_char_device),
        "BlockDevice" => is(std::fs::FileType::is_block_device),
        other => return Err(format!("hostPath type {other:?} is not supported")),
    };
    if ok {
        return Ok(());
    }
    let what = match kind {
        "Directory" | "DirectoryOrCreate" => "directory",
        "File" | "FileOrCreate" => "file",
        "Socket" => "socket",
        "CharDevice" => "character device",
        _ => "block device",
    };
    Err(format!(
        "hostPath type check failed: {path} is not a {what}"
    ))
}

/// The mounts of `container`: each `volumeMount` as a host source (with
/// its `subPath`) and a target in the container. The error is a
/// `CreateContainerConfigError` message.
pub fn container_mounts(
    pod: &Pod,
    container: &Container,
    pod_dir: &Path,
) -> Result<Vec<Mount>, String> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let Some(v) = volumes.iter().find(|v| v.name == m.name) else {
            return Err(format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, container.name
            ));
        };
        let target = crate::runtime::confine::beneath(&m.mount_path, "mountPath")?;
        if target.as_os_str().is_empty() {
            return Err(format!(
                "mountPath {:?} names the root directory",
                m.mount_path
            ));
        }
        let atomic = v.config_map.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some();
        let mut beneath = None;
        let mut source = match &v.host_path {
            Some(h) => PathBuf::from(&h.path),
            None => volume_dir(pod_dir, &v.name),
        };
        // kube mounts object-backed volumes read-only, whatever is asked.
        let read_only = m.read_only.unwrap_or(false) || atomic;
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            let sub = validate_sub_path(sub)?;
            if atomic {
                // The kubelet's own files: resolve through `..data`.
                source = source.join("..data").join(&sub);
            } else {
                // Never through a symbolic link a container made: open
                // each component beneath the volume; a missing directory
                // is created, as kubelet does.
                let parent = sub.parent().unwrap_or(Path::new(""));
                let create = crate::runtime::confine::Create {
                    mode: 0o777,
                    owner: None,
                };
                crate::runtime::confine::open_dir_beneath(&source, parent, Some(create))
                    .map_err(|e| format!("unable to provision SubPath `{}`: {e}", sub.display()))?;
                let full = source.join(&sub);
                match std::fs::symlink_metadata(&full) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        return Err(format!(
                            "unable to provision SubPath `{}`: a symbolic link",
                            sub.display()
                        ))
                    }
                    Ok(_) => {}
                    Err(_) => {
                        crate::runtime::confine::open_dir_beneath(&source, &sub, Some(create))
                            .map_err(|e| {
                                format!("unable to provision SubPath `{}`: {e}", sub.display())
                            })?;
                    }
                }
                // The container may swap it for a link later: the helper
                // opens it beneath the volume again at every start.
                beneath = Some(sub);
            }
        }
        out.push(Mount {
            source,
            beneath,
            target: Path::new("/").join(target),
            read_only,
        });
    }
    Ok(out)
}

/// Unmounts the pod's memory-backed volumes (before its directory is
/// removed); other volumes are plain directories.
pub fn teardown(pod_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(pod_dir.join("volumes")) else {
        return;
    };
    for e in entries.flatten() {
        // Only mount points (a tmpfs) have a device of their own.
        let own_device = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            let (Ok(a), Ok(b)) = (
                std::fs::metadata(p),
                std::fs::metadata(pod_dir.join("volumes")),
            ) else {
                return false;
            };
            a.dev() != b.dev()
        };
        if own_device(&e.path()) {
            if let Err(err) = umount2(&e.path(), MntFlags::MNT_DETACH) {
                tracing::warn!(path = %e.path().display(), "unmounting a volume: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileData {
        FileData {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn atomic_writes_swap_the_whole_payload() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("vol");
        let first = Payload::from([
            ("a".to_string(), file("1", 0o644)),
            ("sub/b".to_string(), file("2", 0o400)),
        ]);
        assert!(write_atomic(&v, &first, None).unwrap());
        assert_eq!(std::fs::read_to_string(v.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(v.join("sub/b")).unwrap(), "2");
        let mode = std::fs::metadata(v.join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        assert!(std::fs::symlink_metadata(v.join("a"))
            .unwrap()
            .file_type()
            .is_symlink());
        let first_ts = std::fs::read_link(v.join("..data")).unwrap();
        // The same payload again writes nothing.
        assert!(!write_atomic(&v, &first, None).unwrap());
        assert_eq!(std::fs::read_link(v.join("..data")).unwrap(), first_ts);
        // A new payload: new contents, a key gone, the old payload removed.
        let second = Payload::from([("a".to_string(), file("changed", 0o644))]);
        assert!(write_atomic(&v, &second, None).unwrap());
        assert_eq!(std::fs::read_to_string(v.join("a")).unwrap(), "changed");
        assert!(std::fs::symlink_metadata(v.join("sub")).is_err());
        assert!(!v.join(&first_ts).exists());
        let names: Vec<String> = std::fs::read_dir(&v)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}"); // ..data, ..<ts>, a
                                                 // A mode change alone is an update too.
        let third = Payload::from([("a".to_string(), file("changed", 0o600))]);
        assert!(write_atomic(&v, &third, None).unwrap());
    }

    #[test]
    fn item_paths_are_validated_as_kubelet_does() {
        assert!(validate_item_path("a/b").is_ok());
        assert_eq!(
            validate_item_path("/etc/x").unwrap_err(),
            "invalid path: must be relative path"
        );
        assert_eq!(
            validate_item_path("..x").unwrap_err(),
            "invalid path: must not start with '..'"
        );
        assert_eq!(
            validate_item_path("a/../../b").unwrap_err(),
            "invalid path: must not contain '..'"
        );
        let dir = tempfile::tempdir().unwrap();
        let bad = Payload::from([("../escape".to_string(), file("x", 0o644))]);
        assert!(write_atomic(&dir.path().join("v"), &bad, None).is_err());
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn sub_paths_with_backsteps_are_refused() {
        assert_eq!(validate_sub_path("a/./b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(
            validate_sub_path("../etc").unwrap_err(),
            "unable to provision SubPath `../etc`: must not contain '..'"
        );
        assert_eq!(
            validate_sub_path("/etc").unwrap_err(),
            "error SubPath `/etc` must not be an absolute path"
        );
    }

    #[test]
    fn config_map_items_and_missing_keys() {
        let data = BTreeMap::from([("k".to_string(), b"v".to_vec())]);
        let items: Vec<KeyToPath> = serde_json::from_value(serde_json::json!([
            {"key": "k", "path": "dir/file", "mode": 0o600}
        ]))
        .unwrap();
        let p = project(Some(data.clone()), Some(&items), 0o644, false, "configmap").unwrap();
        assert_eq!(p["dir/file"], file("v", 0o600));
        let missing: Vec<KeyToPath> =
            serde_json::from_value(serde_json::json!([{"key": "nope", "path": "x"}])).unwrap();
        let err = project(
            Some(data.clone()),
            Some(&missing),
            0o644,
            false,
            "configmap",
        )
        .unwrap_err();
        assert_eq!(err, "configmap references non-existent config key: nope");
        assert!(
            project(Some(data), Some(&missing), 0o644, true, "configmap")
                .unwrap()
                .is_empty()
        );
        assert!(project(None, None, 0o644, true, "secret")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn downward_maps_and_resources() {
        let m = BTreeMap::from([
            ("b".to_string(), "two".to_string()),
            ("a".to_string(), "o\"ne".to_string()),
        ]);
        assert_eq!(format_map(Some(&m)), "a=\"o\\\"ne\"\nb=\"two\"");
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}
        }))
        .unwrap();
        let node = (4000, 8 << 30);
        assert_eq!(resource_value(&c, "limits.cpu", None, node).unwrap(), "1");
        assert_eq!(
            resource_value(&c, "limits.cpu", Some("1m"), node).unwrap(),
            "250"
        );
        assert_eq!(
            resource_value(&c, "limits.memory", Some("1Mi"), node).unwrap(),
            "64"
        );
        assert_eq!(
            resource_value(&c, "requests.memory", None, node).unwrap(),
            "0"
        );
        let bare: Container = serde_json::from_value(serde_json::json!({"name": "c"})).unwrap();
        assert_eq!(
            resource_value(&bare, "limits.cpu", Some("1m"), node).unwrap(),
            "4000"
        );
    }

    #[test]
    fn host_path_types() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("made");
        check_host_path(d.to_str().unwrap(), "DirectoryOrCreate").unwrap();
        assert!(d.is_dir());
        let err = check_host_path(d.to_str().unwrap(), "File").unwrap_err();
        assert_eq!(
            err,
            format!("hostPath type check failed: {} is not a file", d.display())
        );
        assert!(check_host_path("relative", "").is_err());
    }

    #[test]
    fn tokens_refresh_at_eighty_percent() {
        let issued = Timestamp::from_second(1_000_000).unwrap();
        let t = Token {
            token: String::new(),
            issued,
            expires: Timestamp::from_second(1_000_000 + 1000).unwrap(),
        };
        assert!(!t.needs_refresh(Timestamp::from_second(1_000_000 + 799).unwrap()));
        assert!(t.needs_refresh(Timestamp::from_second(1_000_000 + 800).unwrap()));
    }
}
