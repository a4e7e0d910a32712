//! A mount namespace per container (process runtime, root kubelet): the
//! container's own view of the file system, made by the `ballast image
//! exec` helper while it is still root, just before it drops privileges
//! and becomes the container's program.
//!
//! The kubelet writes the view as a [`Spec`] (`containers/<name>/mounts.json`
//! in the pod's private directory) and passes it with `--mounts FILE`; the
//! helper reads it and, in [`setup`]:
//!
//! 1. `unshare(CLONE_NEWNS)` and makes `/` recursively private, so nothing
//!    it mounts reaches the host and no host mount event reaches it;
//! 2. bind-mounts the container's sandbox onto itself: it becomes the
//!    container's `/`, a writable root layer of its own (a file the
//!    container writes at `/x` is `sandbox/<name>/x` on the host, where the
//!    kubelet reads `terminationMessagePath` as before);
//! 3. binds each top-level directory of the host (recursively) into it,
//!    and recreates the host's top-level symbolic links (`/bin -> usr/bin`);
//!    every one of those mounts, submounts included, is then made
//!    read-only: a container never writes the host's files;
//! 4. covers the paths in [`Spec::hide`] (the kubelet's root directory,
//!    its PKI and sandboxes) with an empty read-only tmpfs;
//! 5. mounts a fresh `/proc`, the host's `/sys` read-only, a `/dev` tmpfs
//!    with `null`, `zero`, `full`, `random`, `urandom`, `tty` bound from the
//!    host, a `/dev/pts` with only the exec's own terminal (`kubectl exec
//!    -t`: bound from the host's `/dev/pts` under its name, so `tty` names
//!    it) and a `/dev/shm` tmpfs, and `/tmp` from a directory of the
//!    container's own (kept across exec probes, hooks and restarts of the
//!    same instance);
//! 6. binds each volume at its `mountPath` (read-only when asked, or for
//!    ConfigMap, Secret, downward API and projected volumes, as kube);
//!    a mount point that does not exist is created: in the root layer or
//!    a tmpfs directly, and beneath a read-only host directory through an
//!    overlay of that directory whose writable layer is a scratch tmpfs
//!    (so `/etc/config` shows `/etc`'s files and the new mount point; the
//!    overlay is made read-only again once its mount points exist); the
//!    pod's resolv.conf and hosts file ([`crate::dns`]) are two more such
//!    binds, over `/etc/resolv.conf` and `/etc/hosts`;
//! 7. `readOnlyRootFilesystem`: remounts the root layer read-only (volumes,
//!    `/tmp` and `/dev` stay writable);
//! 8. `pivot_root` into it, detaches the old root, and changes to `/`.
//!
//! Every source is opened before anything is mounted and bound through
//! `/proc/self/fd/N`, so the order of mounts cannot redirect a source.
//! Exec probes, hooks and `kubectl exec` go through the same helper with
//! the same [`Spec`], so they see the same view (their `/dev/shm` is their
//! own). The namespace ends with its last process: nothing is left
//! mounted on the host.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Error, ErrorKind, Result};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{Mode, SFlag};
use serde::{Deserialize, Serialize};

/// One bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The host path (a directory or a file).
    pub source: PathBuf,
    /// A path beneath `source` the container can write to (a volume's
    /// subPath, the termination message file): opened one component at a
    /// time at every start, never through a symbolic link, so a link the
    /// container planted cannot redirect the bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beneath: Option<PathBuf>,
    /// The absolute path in the container.
    pub target: PathBuf,
    pub read_only: bool,
}

/// A container's view of the file system (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The container's sandbox: its `/`.
    pub root: PathBuf,
    /// The host directory shown as `/tmp`.
    pub tmp: PathBuf,
    /// A host directory a scratch tmpfs is mounted on (overlay layers).
    pub scratch: PathBuf,
    /// Host paths covered with an empty read-only tmpfs.
    pub hide: Vec<PathBuf>,
    pub read_only_root: bool,
    /// Volumes and other bind mounts, in any order.
    pub mounts: Vec<Mount>,
}

/// The host's top-level directories mounted by other means.
const OWN_TOP_LEVEL: [&str; 4] = ["proc", "sys", "dev", "tmp"];
/// The device nodes a container's `/dev` has.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// How many symbolic links resolving one mount point may follow.
const MAX_LINKS: usize = 40;

fn err(e: Errno) -> Error {
    Error::from_raw_os_error(e as i32)
}

fn with_path<'a>(what: &str, path: &'a Path) -> impl FnOnce(Errno) -> Error + 'a {
    let what = what.to_string();
    move |e| Error::new(err(e).kind(), format!("{what} {}: {e}", path.display()))
}

impl Spec {
    /// Reads a spec the kubelet wrote.
    pub fn read(path: &Path) -> Result<Spec> {
        serde_json::from_slice(&std::fs::read(path)?).map_err(Error::other)
    }

    /// Writes the spec (0600: it names the kubelet's paths).
    pub fn write(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(Error::other)?)?;
        std::fs::rename(tmp, path)
    }
}

/// Opens a mount's source for binding (see [`Mount::beneath`]).
fn open_source(m: &Mount) -> Result<OwnedFd> {
    let Some(rel) = &m.beneath else {
        return open(&m.source, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(with_path("opening the volume source", &m.source));
    };
    let full = m.source.join(rel);
    let Some(name) = rel.file_name() else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{}: not a path beneath the volume", full.display()),
        ));
    };
    let parent = rel.parent().unwrap_or(Path::new(""));
    let dir = crate::runtime::confine::open_dir_beneath(&m.source, parent, None)
        .map_err(|e| Error::new(e.kind(), format!("opening {}: {e}", full.display())))?;
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(&dir, name, flags, Mode::empty())
        .map_err(with_path("opening the volume source", &full))?;
    let kind = nix::sys::stat::fstat(&fd).map_err(with_path("inspecting", &full))?;
    if SFlag::from_bits_truncate(kind.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{}: a symbolic link, not mounted", full.display()),
        ));
    }
    Ok(fd)
}

/// Makes this process's mount namespace the container's (see the module
/// doc), with `terminal` (a host `/dev/pts/N`) in its `/dev/pts`;
/// afterwards `/` is the container's root and the working directory is
/// `/`. Needs root.
pub fn setup(spec: &Spec, terminal: Option<&Path>) -> Result<()> {
    let root = spec.root.canonicalize()?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| Error::other(format!("unshare: {e}")))?;
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(with_path("making private", Path::new("/")))?;
    // Sources first, while every host path is still where it is; opened in
    // the new namespace, as a bind's source must be one of its mounts.
    let sources = spec
        .mounts
        .iter()
        .map(open_source)
        .collect::<Result<Vec<OwnedFd>>>()?;
    bind(&root, &root, false)?;
    mount(
        Some("tmpfs"),
        &spec.scratch,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(with_path("mounting the scratch tmpfs at", &spec.scratch))?;
    for entry in std::fs::read_dir("/")?.flatten() {
        let name = entry.file_name();
        if OWN_TOP_LEVEL.iter().any(|n| name == *n) {
            continue;
        }
        let here = root.join(&name);
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            if std::fs::symlink_metadata(&here).is_err() {
                // Another container of the pod (or a probe) may be making
                // the same link in the shared root layer right now.
                match std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &here) {
                    Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
            }
        } else if kind.is_dir() && make_dir(&here)? {
            bind(&entry.path(), &here, true)?;
        }
    }
    let sys = root.join("sys");
    if make_dir(&sys)? {
        bind(Path::new("/sys"), &sys, true)?;
    }
    read_only_below(&root)?;
    for hidden in &spec.hide {
        let Ok(rel) = hidden.strip_prefix("/") else {
            continue;
        };
        let at = root.join(rel);
        if at.is_dir() && !at.is_symlink() {
            mount(
                Some("tmpfs"),
                &at,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=0755,size=4k"),
            )
            .map_err(with_path("hiding", &at))?;
        }
    }
    let proc = root.join("proc");
    make_dir(&proc)?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .map_err(with_path("mounting proc at", &proc))?;
    dev(&root, terminal)?;
    let tmp = root.join("tmp");
    make_dir(&tmp)?;
    bind(&spec.tmp, &tmp, false)?;
    // Parents before children: a volume inside another volume is mounted
    // after (on top of) it.
    let mut order: Vec<usize> = (0..spec.mounts.len()).collect();
    order.sort_by_key(|i| spec.mounts[*i].target.components().count());
    let mut overlays = Vec::new();
    for i in order {
        let m = &spec.mounts[i];
        let is_dir = nix::sys::stat::fstat(&sources[i])
            .map(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
            .map_err(with_path("stat", &m.source))?;
        let target = mount_point(&root, &spec.scratch, &m.target, is_dir, &mut overlays)?;
        let source = PathBuf::from(format!("/proc/self/fd/{}", sources[i].as_raw_fd()));
        bind(&source, &target, true)?;
        if m.read_only {
            remount_read_only(&target, MsFlags::empty())?;
        }
    }
    for o in &overlays {
        remount_read_only(o, MsFlags::empty())?;
    }
    if spec.read_only_root {
        remount_read_only(&root, MsFlags::empty())?;
    }
    std::env::set_current_dir(&root)?;
    nix::unistd::pivot_root(".", ".").map_err(|e| Error::other(format!("pivot_root: {e}")))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| Error::other(format!("detaching the old root: {e}")))?;
    std::env::set_current_dir("/")
}

/// Bind-mounts `source` at `target` (recursively with `rec`).
fn bind(source: &Path, target: &Path, rec: bool) -> Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if rec {
        flags |= MsFlags::MS_REC;
    }
    let none: Option<&str> = None;
    mount(Some(source), target, none, flags, none).map_err(|e| {
        Error::new(
            err(e).kind(),
            format!("binding {} at {}: {e}", source.display(), target.display()),
        )
    })
}

/// Makes the mount at `target` read-only, keeping `keep`.
fn remount_read_only(target: &Path, keep: MsFlags) -> Result<()> {
    let none: Option<&str> = None;
    mount(
        none,
        target,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep,
        none,
    )
    .map_err(with_path("making read-only", target))
}

/// Creates the directory `path` if missing; `false` when something that
/// is not a directory is there (left alone).
fn make_dir(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(m.is_dir()),
        Err(e) if e.kind() == ErrorKind::NotFound => match std::fs::create_dir(path) {
            // Made meanwhile by a setup beside this one (the root layer is
            // the pod's, shared by its containers, probes and hooks).
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                Ok(std::fs::symlink_metadata(path)?.is_dir())
            }
            other => other.map(|()| true),
        },
        Err(e) => Err(e),
    }
}

/// Makes every mount strictly below `root` read-only (the host's
/// directories and their submounts), keeping their other flags.
fn read_only_below(root: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    for (point, options) in mount_points(&info) {
        if point == root || !point.starts_with(root) {
            continue;
        }
        let mut keep = MsFlags::empty();
        for o in options.split(',') {
            keep |= match o {
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "noatime" => MsFlags::MS_NOATIME,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "relatime" => MsFlags::MS_RELATIME,
                _ => MsFlags::empty(),
            };
        }
        remount_read_only(&point, keep)?;
    }
    Ok(())
}

/// The mount points and per-mount options of `/proc/self/mountinfo`.
fn mount_points(info: &str) -> Vec<(PathBuf, String)> {
    info.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let point = f.nth(4)?;
            let options = f.next()?;
            Some((PathBuf::from(unescape(point)), options.to_string()))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The container's `/dev`: a tmpfs with a few of the host's device nodes,
/// the standard symbolic links, `/dev/pts` with `terminal` alone, and a
/// `/dev/shm` tmpfs.
fn dev(root: &Path, terminal: Option<&Path>) -> Result<()> {
    let dev = root.join("dev");
    make_dir(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .map_err(with_path("mounting a tmpfs at", &dev))?;
    for d in DEVICES {
        let host = Path::new("/dev").join(d);
        if !host.exists() {
            continue;
        }
        std::fs::write(dev.join(d), b"")?;
        bind(&host, &dev.join(d), false)?;
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(name))?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts)?;
    if let Some((host, name)) = terminal.and_then(|t| Some((t, t.file_name()?))) {
        std::fs::write(pts.join(name), b"")?;
        bind(host, &pts.join(name), false)?;
    }
    let shm = dev.join("shm");
    std::fs::create_dir(&shm)?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(with_path("mounting a tmpfs at", &shm))
}

/// The host path of the container path `target` beneath `root`, created
/// as a directory (or, last, a file when `!dir`) where missing. Symbolic
/// links are resolved inside `root`; a missing entry in a read-only host
/// directory is made through an overlay of it (recorded in `overlays`).
fn mount_point(
    root: &Path,
    scratch: &Path,
    target: &Path,
    dir: bool,
    overlays: &mut Vec<PathBuf>,
) -> Result<PathBuf> {
    let mut rest: VecDeque<OsString> = VecDeque::new();
    push_front(&mut rest, target);
    let mut cur = root.to_path_buf();
    let mut links = 0;
    while let Some(part) = rest.pop_front() {
        if part == ".." {
            if cur != root {
                cur.pop();
            }
            continue;
        }
        let next = cur.join(&part);
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::other(format!(
                        "{}: too many levels of symbolic links",
                        target.display()
                    )));
                }
                let link = std::fs::read_link(&next)?;
                if link.is_absolute() {
                    cur = root.to_path_buf();
                }
                push_front(&mut rest, &link);
            }
            Ok(_) => cur = next,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let as_dir = dir || !rest.is_empty();
                if let Err(e) = create(&next, as_dir) {
                    if e.raw_os_error() != Some(Errno::EROFS as i32) {
                        return Err(e);
                    }
                    overlay(&cur, scratch, overlays.len())?;
                    overlays.push(cur.clone());
                    create(&next, as_dir)?;
                }
                cur = next;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

/// Puts the normal and `..` components of `path` in front of `rest`.
fn push_front(rest: &mut VecDeque<OsString>, path: &Path) {
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    for p in parts.into_iter().rev() {
        rest.push_front(p);
    }
}

/// Makes a missing mount point (one a setup beside this one made
/// meanwhile will do).
fn create(path: &Path, dir: bool) -> Result<()> {
    if dir {
        match std::fs::create_dir(path) {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    } else {
        std::fs::write(path, b"")
    }
}

/// Covers the read-only directory `dir` with an overlay of itself whose
/// writable layer is in the scratch tmpfs.
fn overlay(dir: &Path, scratch: &Path, n: usize) -> Result<()> {
    let upper = scratch.join(format!("{n}/upper"));
    let work = scratch.join(format!("{n}/work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        dir,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(with_path("mounting an overlay at", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_points_are_unescaped() {
        let info = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    40 27 0:30 / /a\\040b rw,nosuid - tmpfs tmpfs rw\n";
        let got = mount_points(info);
        assert_eq!(got[0], (PathBuf::from("/proc"), "rw,relatime".into()));
        assert_eq!(got[1], (PathBuf::from("/a b"), "rw,nosuid".into()));
    }

    #[test]
    fn mount_points_resolve_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var-run")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        let mut overlays = Vec::new();
        let scratch = dir.path().join("scratch");
        let got = mount_point(
            &root,
            &scratch,
            Path::new("/var-run/secrets/x"),
            true,
            &mut overlays,
        )
        .unwrap();
        assert_eq!(got, root.join("run/secrets/x"));
        assert!(got.is_dir());
        // `..` never climbs above the root.
        let got = mount_point(
            &root,
            &scratch,
            Path::new("/up/etc/f"),
            false,
            &mut overlays,
        )
        .unwrap();
        assert_eq!(got, root.join("etc/f"));
        assert!(got.is_file());
        assert!(overlays.is_empty());
    }

    #[test]
    fn specs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            root: "/r".into(),
            tmp: "/t".into(),
            scratch: "/s".into(),
            hide: vec!["/k".into()],
            read_only_root: true,
            mounts: vec![Mount {
                source: "/v".into(),
                beneath: Some("sub/dir".into()),
                target: "/data".into(),
                read_only: false,
            }],
        };
        let path = dir.path().join("mounts.json");
        spec.write(&path).unwrap();
        assert_eq!(Spec::read(&path).unwrap(), spec);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
