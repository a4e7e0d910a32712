//! What confines a process-runtime container: the user it runs as, and the
//! only directory it is given, its sandbox.
//!
//! A kubelet running as root starts every container as an unprivileged
//! user: `securityContext.runAsUser`/`runAsGroup` (the container's over the
//! pod's), else the kubelet's `--container-uid`/`--container-gid` (65534,
//! `nobody`), with no supplementary groups. A kubelet that is not root
//! cannot switch users; its containers run as itself (logged once).
//!
//! The kubelet's directories (and `ballast up`'s data directory around
//! them) are private (0700), so a container cannot reach anything of the
//! kubelet's by path, its own sandbox included: it starts *inside* its
//! sandbox (the shim, or for exec probes and hooks the `ballast image exec`
//! helper, still the kubelet's user, opens the directory and `fchdir`s into
//! it, and the container's process inherits that working directory) and
//! uses relative paths; `..` is the pod's shared directory (mode 1777, as
//! `/tmp`). `HOME` names the sandbox, but is reachable by that path only
//! where the kubelet's root directory is (`ballast up` keeps it private). Only the built-in images'
//! program, the `ballast` binary, is executed through a descriptor the
//! kubelet opened, so it runs even where its directory is private; every
//! other program is executed by path, as the container's user.
//!
//! Paths a container controls (`workingDir`, `terminationMessagePath`)
//! are resolved *beneath* the container's sandbox — the sandbox stands for
//! the container's root directory, as there is no mount namespace — one
//! component at a time without following symbolic links, and `..` is
//! refused. So the kubelet, as root, never creates, chowns or reads a file
//! outside a sandbox on a container's say-so.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Once;

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode, SFlag};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};
use serde::{Deserialize, Serialize};

/// The user and group a container's processes run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// `nobody`: the default user of a root kubelet's containers.
    pub const NOBODY: RunAs = RunAs {
        uid: 65534,
        gid: 65534,
    };
}

/// Whether this process can switch users (its effective uid is 0). When it
/// cannot, that is logged once.
pub fn can_switch_user() -> bool {
    static WARN: Once = Once::new();
    let root = nix::unistd::geteuid().is_root();
    if !root {
        WARN.call_once(|| {
            tracing::warn!(
                uid = nix::unistd::geteuid().as_raw(),
                "the kubelet is not root: containers run as the kubelet's own user (runAsUser is not applied)"
            );
        });
    }
    root
}

/// The user `container` of `pod` runs as (`None`: as the kubelet itself,
/// which is not root), or kubelet's `CreateContainerConfigError` message
/// when `runAsNonRoot` forbids it or a user cannot be switched to.
pub fn user_for(pod: &Pod, container: &Container, default: RunAs) -> Result<Option<RunAs>, String> {
    let me = (!can_switch_user()).then(|| RunAs {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    });
    user_for_kubelet(pod, container, default, me)
}

/// [`user_for`] for a kubelet that is root (`me` is `None`) or runs as `me`.
fn user_for_kubelet(
    pod: &Pod,
    container: &Container,
    default: RunAs,
    me: Option<RunAs>,
) -> Result<Option<RunAs>, String> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|s| s.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_sc.and_then(|s| s.run_as_group));
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod_sc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    let label = format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    );
    let id = |v: Option<i64>, default: u32, what: &str| -> Result<u32, String> {
        match v {
            None => Ok(default),
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| *n != u32::MAX)
                .ok_or_else(|| format!("{what} {n} is not a valid id")),
        }
    };
    // The image's user is the kubelet's default (or the kubelet's own).
    let image_user = me.unwrap_or(default);
    let user = RunAs {
        uid: id(run_as_user, image_user.uid, "runAsUser")?,
        gid: id(run_as_group, image_user.gid, "runAsGroup")?,
    };
    // Kubernetes' verifyRunAsNonRoot.
    if non_root {
        if run_as_user == Some(0) {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: {label:?}, container: {})",
                container.name
            ));
        }
        if run_as_user.is_none() && user.uid == 0 {
            return Err(format!(
                "container has runAsNonRoot and image will run as root (pod: {label:?}, container: {})",
                container.name
            ));
        }
    }
    match me {
        None => Ok(Some(user)),
        Some(me) if user == me => Ok(None),
        Some(me) => Err(format!(
            "the kubelet runs as uid {} gid {} and cannot run a container as runAsUser {} runAsGroup {} (process runtime; run the kubelet as root)",
            me.uid, me.gid, user.uid, user.gid
        )),
    }
}

/// A container-supplied path as a path beneath its sandbox: a leading `/`
/// is dropped, `.` components are ignored, and `..` is refused.
pub fn beneath(path: &str, field: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!(
                    "{field} {path:?} must not contain '..': the process runtime keeps it inside the container's sandbox"
                ))
            }
        }
    }
    if path.as_bytes().contains(&0) {
        return Err(format!("{field} {path:?} contains a NUL byte"));
    }
    Ok(out)
}

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// How [`open_dir_beneath`] makes a missing directory: its mode and owner
/// (`None`: the kubelet's own user).
#[derive(Debug, Clone, Copy)]
pub struct Create {
    pub mode: u32,
    pub owner: Option<RunAs>,
}

/// Opens the directory `rel` beneath `base` (a directory the kubelet owns),
/// one component at a time, never following a symbolic link; with
/// `create`, missing components are made with its mode and owner.
pub fn open_dir_beneath(
    base: &Path,
    rel: &Path,
    create: Option<Create>,
) -> std::io::Result<OwnedFd> {
    let mut dir = open(base, DIR_FLAGS, Mode::empty()).map_err(io)?;
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: not a plain relative path", rel.display()),
            ));
        };
        dir = open_child(&dir, name, create)?;
    }
    Ok(dir)
}

fn open_child(parent: &OwnedFd, name: &OsStr, create: Option<Create>) -> std::io::Result<OwnedFd> {
    match openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT) if create.is_some() => {
            let c = create.expect("checked");
            match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io(e)),
            }
            let fd = openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(io)?;
            own(&fd, c)?;
            Ok(fd)
        }
        Err(e) => Err(io(e)),
    }
}

/// Sets the mode and owner of an open directory (owner only when the
/// kubelet can switch users).
pub fn own(fd: &OwnedFd, c: Create) -> std::io::Result<()> {
    if let Some(u) = c.owner {
        if can_switch_user() {
            fchown(fd, Some(Uid::from_raw(u.uid)), Some(Gid::from_raw(u.gid))).map_err(io)?;
        }
    }
    fchmod(fd, Mode::from_bits_truncate(c.mode)).map_err(io)
}

/// Reads at most `max` bytes of the regular file `rel` beneath `base`
/// without following symbolic links (`None`: missing, not a regular file,
/// or unreadable).
pub fn read_beneath(base: &Path, rel: &Path, max: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let name = rel.file_name()?;
    let parent = open_dir_beneath(base, rel.parent().unwrap_or(Path::new("")), None).ok()?;
    let fd = openat(
        &parent,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = fstat(&fd).ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return None;
    }
    let mut out = Vec::new();
    std::fs::File::from(fd)
        .take(max as u64)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// Removes the file `rel` beneath `base` (a symbolic link there is removed,
/// never followed); a missing one is fine.
pub fn remove_beneath(base: &Path, rel: &Path) {
    let Some(name) = rel.file_name() else { return };
    if let Ok(parent) = open_dir_beneath(base, rel.parent().unwrap_or(Path::new("")), None) {
        let _ = unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir);
    }
}

/// Makes the sandbox directory `workdir` beneath `sandbox` this process's
/// working directory, through a descriptor: the way in for a container
/// whose user cannot reach its sandbox by path. The shim and the exec
/// helper do this before starting the container's process, which inherits it.
pub fn enter(sandbox: &Path, workdir: &Path) -> std::io::Result<()> {
    let dir = open_dir_beneath(sandbox, workdir, None)?;
    nix::unistd::fchdir(&dir).map_err(io)
}

/// A command ready to spawn as a container's process, with the
/// descriptor it may need kept open until it is spawned.
pub struct Confined {
    pub cmd: std::process::Command,
    exe: Option<OwnedFd>,
}

impl Confined {
    /// The command, and the descriptor to keep open until it is spawned.
    pub fn into_parts(self) -> (std::process::Command, Option<OwnedFd>) {
        (self.cmd, self.exe)
    }
}

/// The command running `program` (resolved; `argv0` as the user wrote it)
/// in the current working directory, as `user` when given (no
/// supplementary groups: the standard library drops them when root sets a
/// uid). `ballast_exe` is the one program executed through a descriptor
/// (see the module doc).
pub fn command(
    program: &Path,
    argv0: &str,
    ballast_exe: &Path,
    user: Option<RunAs>,
) -> std::io::Result<Confined> {
    use std::os::unix::process::CommandExt;
    let Some(user) = user else {
        let mut cmd = std::process::Command::new(program);
        cmd.arg0(argv0);
        return Ok(Confined { cmd, exe: None });
    };
    let is_ballast = match (program.canonicalize(), ballast_exe.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let (mut cmd, exe) = if is_ballast {
        // Close-on-exec is fine: the kernel opens the file before it closes
        // those, and the ballast binary is not a script.
        let exe = open(program, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(io)?;
        let cmd = std::process::Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
        (cmd, Some(exe))
    } else {
        (std::process::Command::new(program), None)
    };
    cmd.arg0(argv0).uid(user.uid).gid(user.gid);
    Ok(Confined { cmd, exe })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_stay_beneath_the_sandbox() {
        assert_eq!(
            beneath("/dev/termination-log", "f").unwrap(),
            PathBuf::from("dev/termination-log")
        );
        assert_eq!(beneath("./a/./b", "f").unwrap(), PathBuf::from("a/b"));
        assert_eq!(beneath("/", "f").unwrap(), PathBuf::new());
        let err = beneath("/work/../../etc", "workingDir").unwrap_err();
        assert!(err.contains("must not contain '..'"), "{err}");
    }

    #[test]
    fn symlinks_beneath_the_sandbox_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        std::os::unix::fs::symlink(&outside, sandbox.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), sandbox.join("msg")).unwrap();
        assert!(open_dir_beneath(&sandbox, Path::new("link"), None).is_err());
        let create = Create {
            mode: 0o700,
            owner: None,
        };
        assert!(open_dir_beneath(&sandbox, Path::new("link/x"), Some(create)).is_err());
        assert!(!outside.join("x").exists());
        assert_eq!(read_beneath(&sandbox, Path::new("msg"), 10), None);
        assert_eq!(read_beneath(&sandbox, Path::new("link/secret"), 10), None);
        open_dir_beneath(&sandbox, Path::new("a/b"), Some(create)).unwrap();
        std::fs::write(sandbox.join("a/b/m"), "hello").unwrap();
        assert_eq!(
            read_beneath(&sandbox, Path::new("a/b/m"), 3).as_deref(),
            Some(&b"hel"[..])
        );
        remove_beneath(&sandbox, Path::new("msg"));
        assert!(outside.join("secret").exists());
        assert!(std::fs::symlink_metadata(sandbox.join("msg")).is_err());
    }

    #[test]
    fn run_as_non_root_refuses_uid_zero() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"securityContext": {"runAsUser": 1000, "runAsNonRoot": true},
                     "containers": [{"name": "c"}]}
        }))
        .unwrap();
        let mut c = pod.spec.as_ref().unwrap().containers[0].clone();
        let got = user_for_kubelet(&pod, &c, RunAs::NOBODY, None).unwrap();
        assert_eq!(
            got,
            Some(RunAs {
                uid: 1000,
                gid: 65534
            })
        );
        c.security_context =
            Some(serde_json::from_value(serde_json::json!({"runAsUser": 0})).unwrap());
        let err = user_for_kubelet(&pod, &c, RunAs::NOBODY, None).unwrap_err();
        assert_eq!(
            err,
            "container's runAsUser breaks non-root policy (pod: \"p_ns(u)\", container: c)"
        );
    }

    fn pod(spec: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": spec,
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    #[test]
    fn container_security_context_wins_over_the_pod() {
        let (p, c) = pod(serde_json::json!({
            "securityContext": {"runAsUser": 1000, "runAsGroup": 2000},
            "containers": [{"name": "c", "securityContext": {"runAsUser": 3000}}]
        }));
        let got = user_for_kubelet(&p, &c, RunAs::NOBODY, None).unwrap();
        assert_eq!(
            got,
            Some(RunAs {
                uid: 3000,
                gid: 2000
            })
        );
        let (p, c) = pod(serde_json::json!({"containers": [{"name": "c"}]}));
        let got = user_for_kubelet(&p, &c, RunAs::NOBODY, None).unwrap();
        assert_eq!(got, Some(RunAs::NOBODY));
        let (p, c) = pod(serde_json::json!({
            "containers": [{"name": "c", "securityContext": {"runAsUser": -1}}]
        }));
        let err = user_for_kubelet(&p, &c, RunAs::NOBODY, None).unwrap_err();
        assert_eq!(err, "runAsUser -1 is not a valid id");
    }

    #[test]
    fn run_as_non_root_refuses_a_root_image_user() {
        let (p, c) = pod(serde_json::json!({
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "c"}]
        }));
        let root = RunAs { uid: 0, gid: 0 };
        let err = user_for_kubelet(&p, &c, root, None).unwrap_err();
        assert_eq!(
            err,
            "container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: c)"
        );
        // A kubelet that is not root is the image's user: not root, fine.
        let me = RunAs {
            uid: 1000,
            gid: 1000,
        };
        assert_eq!(user_for_kubelet(&p, &c, root, Some(me)).unwrap(), None);
    }

    #[test]
    fn a_kubelet_that_is_not_root_refuses_other_users() {
        let me = RunAs {
            uid: 1000,
            gid: 1000,
        };
        let (p, c) = pod(serde_json::json!({
            "containers": [{"name": "c", "securityContext": {"runAsUser": 1000}}]
        }));
        assert_eq!(
            user_for_kubelet(&p, &c, RunAs::NOBODY, Some(me)).unwrap(),
            None
        );
        let (p, c) = pod(serde_json::json!({
            "containers": [{"name": "c", "securityContext": {"runAsUser": 1001}}]
        }));
        let err = user_for_kubelet(&p, &c, RunAs::NOBODY, Some(me)).unwrap_err();
        assert!(
            err.contains("cannot run a container as runAsUser 1001"),
            "{err}"
        );
    }
}
