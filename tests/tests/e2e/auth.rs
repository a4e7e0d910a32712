//! The etcd Auth API through the real `etcdctl` 3.4: users, roles, auth
//! enable/disable and the permission checks on KV, Txn, Watch, Lease,
//! Cluster and Maintenance. Every case runs against real etcd and against
//! Ballast with one set of expected outputs (stdout, the `Error:` line,
//! exit codes), like `etcdctl_compat.rs`.
//!
//! Enabling auth changes the whole cluster, so every case gets a fresh
//! cluster. `Cluster::restart` waits for `etcdctl endpoint health`, which
//! fails without credentials once auth is on (on etcd too), so the restart
//! case starts the member again itself and waits with root's credentials.

use std::process::Child;
use std::time::{Duration, Instant};

use ballast_pki::CertSpec;
use ballast_tests::cluster::ClusterOptions;
use ballast_tests::etcdctl::ClientTls;
use ballast_tests::process::{self, Io, Launch};
use ballast_tests::{workspace_bin, Cluster, ClusterKind, Etcdctl, Output};

const ROOT: &str = "--user=root:rootpw";
const ALICE: &str = "--user=alice:apw";
const DENIED: &str = "Error: etcdserver: permission denied";
const NO_USER: &str = "Error: etcdserver: user name is empty";
const BAD_PASSWORD: &str = "Error: etcdserver: authentication failed, invalid user ID or password";

/// Asserts exit code and exact stdout.
#[track_caller]
fn expect(out: &Output, code: i32, stdout: &str) {
    assert!(
        out.code == code && out.stdout == stdout && !out.timed_out,
        "expected exit code {code} and stdout {stdout:?}, got {out:#?}"
    );
}

/// Asserts a failure: exit code and stderr's `Error:` line.
#[track_caller]
fn expect_err(out: &Output, code: i32, error_line: &str) {
    assert!(
        out.code == code && out.error_line() == Some(error_line) && !out.timed_out,
        "expected exit code {code} and stderr line {error_line:?}, got {out:#?}"
    );
}

/// Root (with the root role, granted by `etcdctl auth enable` itself), a
/// role `ro` (read `/a` prefix, readwrite `/b`, write `[/c, /d)`, read from
/// `/z` on) and alice holding it; then auth enabled.
fn set_up(ctl: &Etcdctl) {
    expect_err(
        &ctl.run(&["auth", "enable"]),
        1,
        "Error: etcdserver: root user does not exist",
    );
    expect(
        &ctl.run(&["user", "add", "root:rootpw"]),
        0,
        "User root created\n",
    );
    expect_err(
        &ctl.run(&["user", "add", "root:other"]),
        1,
        "Error: etcdserver: user name already exists",
    );
    expect(&ctl.run(&["role", "add", "ro"]), 0, "Role ro created\n");
    expect_err(
        &ctl.run(&["role", "add", "ro"]),
        1,
        "Error: etcdserver: role name already exists",
    );
    for grant in [
        &["read", "/a", "--prefix"][..],
        &["readwrite", "/b"],
        &["write", "/c", "/d"],
        &["read", "--from-key", "/z"],
    ] {
        let mut args = vec!["role", "grant-permission", "ro"];
        args.extend_from_slice(grant);
        expect(&ctl.run(&args), 0, "Role ro updated\n");
    }
    expect(
        &ctl.run(&["user", "add", "alice:apw"]),
        0,
        "User alice created\n",
    );
    expect(
        &ctl.run(&["user", "grant-role", "alice", "ro"]),
        0,
        "Role ro is granted to user alice\n",
    );
    expect(&ctl.run(&["auth", "enable"]), 0, "Authentication Enabled\n");
}

mod cases {
    use super::*;

    /// User and role CRUD, enabling, and what each caller may do.
    pub fn users_roles_and_permissions(cluster: &mut Cluster) {
        let ctl = cluster.etcdctl();
        let run = |args: &[&str]| ctl.run(args);

        // Before auth is on, anyone manages users and roles.
        expect_err(
            &run(&["role", "add", ""]),
            1,
            "Error: etcdserver: role name is empty",
        );
        set_up(&ctl);
        let role_ro = "Role ro\nKV Read:\n\t[/a, /b) (prefix /a)\n\t/b\n\t[/z, <open ended>\n\
                       KV Write:\n\t/b\n\t[/c, /d) (prefix /c)\n";
        expect(&run(&[ROOT, "role", "get", "ro"]), 0, role_ro);
        expect_err(
            &run(&[ROOT, "role", "get", "nope"]),
            1,
            "Error: etcdserver: role name not found",
        );
        expect_err(
            &run(&[ROOT, "user", "grant-role", "alice", "nope"]),
            1,
            "Error: etcdserver: role name not found",
        );
        expect_err(
            &run(&[ROOT, "user", "grant-role", "bob", "ro"]),
            1,
            "Error: etcdserver: user name not found",
        );
        expect(
            &run(&[ROOT, "user", "get", "alice"]),
            0,
            "User: alice\nRoles: ro\n",
        );
        expect(
            &run(&[ROOT, "user", "get", "root"]),
            0,
            "User: root\nRoles: root\n",
        );
        expect(&run(&[ROOT, "user", "list"]), 0, "alice\nroot\n");
        expect(&run(&[ROOT, "role", "list"]), 0, "ro\nroot\n");

        // No credentials, bad credentials, root.
        expect_err(&run(&["put", "/a/x", "1"]), 1, NO_USER);
        expect_err(&run(&["get", "/a/x"]), 1, NO_USER);
        expect_err(&run(&["user", "list"]), 1, NO_USER);
        expect_err(
            &run(&["--user=root:wrong", "put", "/a/x", "1"]),
            2,
            BAD_PASSWORD,
        );
        expect_err(&run(&["--user=nobody:pw", "get", "/a/x"]), 2, BAD_PASSWORD);
        expect(&run(&[ROOT, "put", "/a/x", "1"]), 0, "OK\n");

        // Alice: read under /a, read and write /b, write [/c, /d), read from /z.
        expect(&run(&[ALICE, "get", "/a/x"]), 0, "/a/x\n1\n");
        expect(&run(&[ALICE, "get", "/a", "--prefix"]), 0, "/a/x\n1\n");
        expect(&run(&[ALICE, "get", "/a/x", "/b"]), 0, "/a/x\n1\n");
        expect_err(&run(&[ALICE, "put", "/a/x", "2"]), 1, DENIED);
        expect_err(&run(&[ALICE, "del", "/a/x"]), 1, DENIED);
        expect_err(&run(&[ALICE, "get", "/b0"]), 1, DENIED);
        expect_err(&run(&[ALICE, "get", "/a/x", "/b0"]), 1, DENIED);
        expect_err(&run(&[ALICE, "get", "/y", "--from-key"]), 1, DENIED);
        expect(&run(&[ALICE, "get", "/z", "--from-key"]), 0, "");
        expect(&run(&[ALICE, "put", "/b", "1"]), 0, "OK\n");
        expect(
            &run(&[ALICE, "put", "/b", "1", "--prev-kv"]),
            0,
            "OK\n/b\n1\n",
        );
        expect(&run(&[ALICE, "put", "/c", "1"]), 0, "OK\n");
        expect_err(&run(&[ALICE, "put", "/c", "1", "--prev-kv"]), 1, DENIED);
        expect_err(&run(&[ALICE, "del", "/c", "--prev-kv"]), 1, DENIED);
        expect(&run(&[ALICE, "del", "/c"]), 0, "1\n");
        expect_err(
            &ctl.run_with_stdin(&[ALICE, "txn"], "\nput /a/x 3\n\n\n"),
            1,
            DENIED,
        );
        expect_err(
            &ctl.run_with_stdin(&[ALICE, "txn"], "value(\"/q\") = \"1\"\n\nget /a/x\n\n\n"),
            1,
            DENIED,
        );
        expect(
            &ctl.run_with_stdin(&[ALICE, "txn"], "\nget /a/x\n\n\n"),
            0,
            "SUCCESS\n\n/a/x\n1\n",
        );

        // Alice may read herself and her roles, nothing else of auth.
        expect(
            &run(&[ALICE, "user", "get", "alice"]),
            0,
            "User: alice\nRoles: ro\n",
        );
        expect(&run(&[ALICE, "role", "get", "ro"]), 0, role_ro);
        expect_err(&run(&[ALICE, "user", "get", "root"]), 1, DENIED);
        expect_err(&run(&[ALICE, "role", "get", "root"]), 1, DENIED);
        expect_err(&run(&[ALICE, "user", "list"]), 1, DENIED);
        expect_err(&run(&[ALICE, "user", "add", "eve:pw"]), 1, DENIED);
        expect_err(&run(&[ALICE, "auth", "disable"]), 1, DENIED);

        // Admin-only cluster and maintenance calls; open ones stay open.
        expect_err(
            &run(&[
                ALICE,
                "member",
                "add",
                "x",
                "--peer-urls=http://127.0.0.1:1",
            ]),
            1,
            DENIED,
        );
        let one = cluster.etcdctl_at(0);
        let out = one.run(&[ALICE, "defrag"]);
        assert!(
            out.code == 1
                && out.stderr.contains(&format!(
                    "Failed to defragment etcd member[{}] (rpc error: code = Unknown desc = auth: permission denied)",
                    cluster.member(0).endpoint()
                )),
            "{out:#?}"
        );
        expect_err(
            &one.run(&[ALICE, "endpoint", "hashkv"]),
            1,
            "Error: rpc error: code = Unknown desc = auth: permission denied",
        );
        expect(
            &one.run(&[ROOT, "defrag"]),
            0,
            &format!(
                "Finished defragmenting etcd member[{}]\n",
                cluster.member(0).endpoint()
            ),
        );
        let members = run(&[ALICE, "member", "list"]);
        assert!(
            members.code == 0 && members.stdout.lines().count() == 3,
            "{members:#?}"
        );
        expect(&run(&[ALICE, "alarm", "list"]), 0, "");
        expect(&run(&["compaction", "1"]), 0, "compacted revision 1\n");

        // Leases: granting is open; revoking (or attaching more keys) needs
        // write permission on the keys already attached.
        let granted = run(&[ALICE, "lease", "grant", "100"]);
        assert_eq!(granted.code, 0, "{granted:#?}");
        let lease = granted
            .stdout
            .split_whitespace()
            .nth(1)
            .expect("lease id")
            .to_string();
        expect(
            &run(&[ROOT, "put", "/q", "1", &format!("--lease={lease}")]),
            0,
            "OK\n",
        );
        expect_err(
            &run(&[ALICE, "put", "/b", "2", &format!("--lease={lease}")]),
            1,
            DENIED,
        );
        expect_err(
            &run(&[ALICE, "lease", "revoke", &lease]),
            1,
            "Error: failed to revoke lease (etcdserver: permission denied)",
        );
        expect_err(
            &run(&["lease", "revoke", &lease]),
            1,
            "Error: failed to revoke lease (etcdserver: user name is empty)",
        );
        expect(
            &run(&[ROOT, "lease", "revoke", &lease]),
            0,
            &format!("lease {lease} revoked\n"),
        );

        // Watch: refused without read permission, delivered with it.
        let refused = run(&[ALICE, "watch", "/q"]);
        assert!(
            refused.code == 5
                && refused.stderr.contains(
                    "watch was canceled (rpc error: code = PermissionDenied desc = etcdserver: permission denied)"
                )
                && refused.error_line() == Some("Error: watch is canceled by the server"),
            "{refused:#?}"
        );
        let anonymous = run(&["watch", "/a/x"]);
        assert!(
            anonymous.code == 5
                && anonymous.stderr.contains(
                    "watch was canceled (rpc error: code = InvalidArgument desc = etcdserver: user name is empty)"
                ),
            "{anonymous:#?}"
        );
        let watch = ctl.spawn(&[ALICE, "watch", "/a", "--prefix"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut n = 0;
        let lines = loop {
            // Until the watch is in place, puts go unseen: keep putting.
            n += 1;
            expect(&run(&[ROOT, "put", "/a/w", &n.to_string()]), 0, "OK\n");
            if let Some(l) = watch.wait_for_lines(3, Duration::from_millis(500)) {
                break l;
            }
            assert!(Instant::now() < deadline, "no event: {:?}", watch.lines());
        };
        assert_eq!(lines[..2], ["PUT".to_string(), "/a/w".to_string()]);
        drop(watch);

        // Revoking a permission takes effect at once.
        expect(
            &run(&[ROOT, "role", "revoke-permission", "ro", "/a", "--prefix"]),
            0,
            "Permission of range [/a, /b) is revoked from role ro\n",
        );
        expect_err(&run(&[ALICE, "get", "/a/x"]), 1, DENIED);
        expect_err(
            &run(&[ROOT, "role", "revoke-permission", "ro", "/a", "--prefix"]),
            1,
            "Error: etcdserver: permission is not granted to the role",
        );

        // A new password replaces the old one.
        expect(
            &ctl.run_with_stdin(
                &[ROOT, "user", "passwd", "alice", "--interactive=false"],
                "newpw\n",
            ),
            0,
            "Password updated\n",
        );
        expect_err(&run(&[ALICE, "get", "/b"]), 2, BAD_PASSWORD);
        expect(&run(&["--user=alice:newpw", "get", "/b"]), 0, "/b\n1\n");

        // Root stays root while auth is on.
        for args in [
            &["user", "delete", "root"][..],
            &["user", "revoke-role", "root", "root"],
            &["role", "delete", "root"],
        ] {
            let mut a = vec![ROOT];
            a.extend_from_slice(args);
            expect_err(&run(&a), 1, "Error: etcdserver: invalid auth management");
        }

        // Taking it apart.
        expect(
            &run(&[ROOT, "user", "revoke-role", "alice", "ro"]),
            0,
            "Role ro is revoked from user alice\n",
        );
        expect_err(
            &run(&[ROOT, "user", "revoke-role", "alice", "ro"]),
            1,
            "Error: etcdserver: role is not granted to the user",
        );
        expect(
            &run(&[ROOT, "role", "delete", "ro"]),
            0,
            "Role ro deleted\n",
        );
        expect_err(
            &run(&[ROOT, "role", "delete", "ro"]),
            1,
            "Error: etcdserver: role name not found",
        );
        expect(
            &run(&[ROOT, "user", "delete", "alice"]),
            0,
            "User alice deleted\n",
        );
        expect_err(
            &run(&[ROOT, "user", "delete", "alice"]),
            1,
            "Error: etcdserver: user name not found",
        );
        expect(
            &run(&[ROOT, "auth", "disable"]),
            0,
            "Authentication Disabled\n",
        );
        expect(&run(&["put", "/a/x", "9"]), 0, "OK\n");
        // Credentials are ignored (not refused) with auth off.
        expect(
            &run(&["--user=root:wrong", "get", "/a/x", "--print-value-only"]),
            0,
            "9\n",
        );
        expect(&run(&["auth", "disable"]), 0, "Authentication Disabled\n");
    }

    /// A follower checks what it receives (and forwards admin calls with the
    /// caller's token), and a restarted member still knows the users, the
    /// roles and that auth is on.
    pub fn follower_and_restart(cluster: &mut Cluster) {
        set_up(&cluster.etcdctl());
        let leader = cluster.leader().expect("a leader");
        let f = (leader + 1) % 3;
        let fctl = cluster.etcdctl_at(f);
        expect_err(&fctl.run(&[ALICE, "put", "/a/x", "1"]), 1, DENIED);
        expect_err(&fctl.run(&["put", "/a/x", "1"]), 1, NO_USER);
        expect(&fctl.run(&[ROOT, "put", "/a/x", "1"]), 0, "OK\n");
        expect(
            &fctl.run(&[ALICE, "get", "/a/x", "--print-value-only"]),
            0,
            "1\n",
        );
        let id = cluster.member_id_hex(f);
        let url = cluster.member(f).peer_url();
        expect_err(
            &fctl.run(&[
                ALICE,
                "member",
                "update",
                &id,
                &format!("--peer-urls={url}"),
            ]),
            1,
            DENIED,
        );
        let updated = fctl.run(&[ROOT, "member", "update", &id, &format!("--peer-urls={url}")]);
        assert!(
            updated.code == 0
                && updated
                    .stdout
                    .starts_with(&format!("Member {id:>16} updated in cluster")),
            "{updated:#?}"
        );
        expect(
            &fctl.run(&[ROOT, "role", "add", "later"]),
            0,
            "Role later created\n",
        );

        // Restart the follower: everything comes back from its disk.
        cluster.kill(f);
        let _member = Respawned::start(cluster, f);
        let back = process::poll(Duration::from_secs(45), Duration::from_millis(300), || {
            let out = fctl.run(&[ROOT, "get", "/a/x", "--print-value-only", "--consistency=s"]);
            (out.code == 0 && out.stdout == "1\n").then_some(out)
        });
        assert!(
            back.is_some(),
            "member {f} did not come back:\n{}",
            cluster.log_tails(30)
        );
        expect_err(&fctl.run(&["get", "/a/x", "--consistency=s"]), 1, NO_USER);
        expect_err(&fctl.run(&[ALICE, "put", "/a/x", "2"]), 1, DENIED);
        expect(
            &fctl.run(&[ALICE, "get", "/a/x", "--print-value-only"]),
            0,
            "1\n",
        );
        expect(&fctl.run(&[ROOT, "role", "list"]), 0, "later\nro\nroot\n");
    }

    /// With `--client-cert-auth`, a verified client certificate's common
    /// name is the user when no token is sent; a token wins over it.
    pub fn client_certificate_names_the_user(cluster: &mut Cluster) {
        let root = cluster.etcdctl(); // the harness's `root` certificate
        set_up(&root);
        expect(&root.run(&["put", "/a/x", "1"]), 0, "OK\n");
        expect(&root.run(&["user", "list"]), 0, "alice\nroot\n");
        let tls = cluster.tls().expect("a TLS cluster");
        let (cert, key) = tls
            .ca
            .issue(&CertSpec::client("alice", &[]))
            .and_then(|c| c.write(&tls.dir, "client-alice"))
            .expect("issue alice's certificate");
        let alice = cluster.etcdctl().with_tls(ClientTls {
            cacert: tls.client.cacert.clone(),
            cert: Some(cert),
            key: Some(key),
        });
        expect(&alice.run(&["get", "/a/x", "--print-value-only"]), 0, "1\n");
        expect_err(&alice.run(&["put", "/a/x", "2"]), 1, DENIED);
        expect_err(&alice.run(&["user", "list"]), 1, DENIED);
        expect_err(&root.run(&[ALICE, "put", "/a/x", "2"]), 1, DENIED);
        expect(&alice.run(&[ROOT, "put", "/a/x", "2"]), 0, "OK\n");
    }
}

/// A member started again outside the harness (whose `restart` would wait
/// for an unauthenticated health check); killed on drop.
struct Respawned(Child);

impl Respawned {
    fn start(cluster: &Cluster, i: usize) -> Respawned {
        let m = cluster.member(i);
        let launch = match cluster.kind() {
            ClusterKind::Etcd => {
                Launch::new(std::env::var_os("ETCD_BIN").unwrap_or_else(|| "/usr/bin/etcd".into()))
            }
            ClusterKind::Ballast => Launch::new(workspace_bin("ballast")).arg("server"),
        };
        let child = process::spawn(launch.args(m.etcd_flags()).io(Io::Log(m.log_path.clone())))
            .expect("start the member again");
        Respawned(child)
    }
}

impl Drop for Respawned {
    fn drop(&mut self) {
        process::kill(&mut self.0);
    }
}

/// One `#[test]` per case per kind, each on a fresh three-member cluster.
macro_rules! auth_suite {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn users_roles_and_permissions() {
                cases::users_roles_and_permissions(&mut Cluster::start($kind));
            }

            #[test]
            fn follower_and_restart() {
                cases::follower_and_restart(&mut Cluster::start($kind));
            }

            #[test]
            fn client_certificate_names_the_user() {
                let options = ClusterOptions {
                    tls: true,
                    ..ClusterOptions::default()
                };
                cases::client_certificate_names_the_user(&mut Cluster::start_with($kind, options));
            }
        }
    };
}

auth_suite!(etcd, ClusterKind::Etcd);
auth_suite!(ballast, ClusterKind::Ballast);

/// Ballast only: etcd has no Authenticate cap, and its auth state lives in
/// its bbolt file, not in `auth.pb`.
mod ballast_fails_closed {
    use super::*;

    use ballast_proto::etcdserverpb::{
        auth_client::AuthClient, kv_client::KvClient, AuthenticateRequest, PutRequest, RangeRequest,
    };
    use tonic::transport::Channel;
    use tonic::{Code, Request};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f)
    }

    async fn channel(cluster: &Cluster, member: usize) -> Channel {
        Channel::from_shared(cluster.member(member).client_url())
            .expect("url")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .expect("connect")
    }

    async fn token(ch: &Channel, name: &str, password: &str) -> String {
        AuthClient::new(ch.clone())
            .authenticate(AuthenticateRequest {
                name: name.into(),
                password: password.into(),
            })
            .await
            .expect("authenticate")
            .into_inner()
            .token
    }

    fn with_token<T>(msg: T, token: &str) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("token", token.parse().expect("ascii token"));
        req
    }

    /// A damaged `auth.pb` (garbage, truncated, empty) stops the member at
    /// start with an error naming the file; it never comes up with auth
    /// off. With the file restored it starts and still refuses anonymous
    /// writes.
    #[test]
    fn damaged_auth_file_stops_the_member() {
        let mut cluster = Cluster::start(ClusterKind::Ballast);
        set_up(&cluster.etcdctl());
        let f = (cluster.leader().expect("a leader") + 1) % 3;
        let fctl = cluster.etcdctl_at(f);
        expect(&fctl.run(&[ROOT, "put", "/a/x", "1"]), 0, "OK\n");
        cluster.kill(f);
        let path = cluster.member(f).data_dir.join("member").join("auth.pb");
        let good = std::fs::read(&path).expect("auth.pb is written");
        for (what, bad) in [
            ("garbage", b"not an auth state at all".to_vec()),
            ("truncated", good[..good.len() - 3].to_vec()),
            ("empty", Vec::new()),
        ] {
            std::fs::write(&path, &bad).unwrap();
            let m = cluster.member(f);
            let mut child = process::spawn(
                Launch::new(workspace_bin("ballast"))
                    .arg("server")
                    .args(m.etcd_flags())
                    .io(Io::Log(m.log_path.clone())),
            )
            .expect("start the member");
            let status = process::wait_timeout(&mut child, Duration::from_secs(30));
            if status.is_none() {
                process::kill(&mut child);
            }
            let log = m.log_tail(20);
            assert!(
                status.is_some_and(|s| !s.success()),
                "{what}: the member did not stop: {status:?}\n{log}"
            );
            assert!(
                log.contains(&format!(
                    "the auth state file {} is corrupt",
                    path.display()
                )) && log.contains("refusing to start"),
                "{what}: {log}"
            );
        }
        std::fs::write(&path, &good).unwrap();
        let _member = Respawned::start(&cluster, f);
        let back = process::poll(Duration::from_secs(45), Duration::from_millis(300), || {
            let out = fctl.run(&[ROOT, "get", "/a/x", "--print-value-only", "--consistency=s"]);
            (out.code == 0 && out.stdout == "1\n").then_some(out)
        });
        assert!(back.is_some(), "{}", cluster.log_tails(30));
        expect_err(&fctl.run(&["put", "/a/x", "2"]), 1, NO_USER);
        expect_err(&fctl.run(&[ALICE, "put", "/a/x", "2"]), 1, DENIED);
    }

    /// A flood of `Authenticate` calls is not queued without bound: past
    /// the cap they are refused at once with etcd's `ResourceExhausted`
    /// "too many requests"; the others succeed, and afterwards it works.
    #[test]
    fn authenticate_flood_gets_resource_exhausted() {
        let cluster = Cluster::start(ClusterKind::Ballast);
        set_up(&cluster.etcdctl());
        let results = block_on(async {
            let ch = channel(&cluster, 0).await;
            let mut calls = tokio::task::JoinSet::new();
            for _ in 0..200 {
                let mut auth = AuthClient::new(ch.clone());
                calls.spawn(async move {
                    auth.authenticate(AuthenticateRequest {
                        name: "alice".into(),
                        password: "apw".into(),
                    })
                    .await
                });
            }
            calls.join_all().await
        });
        let mut exhausted = 0;
        for r in &results {
            match r {
                Ok(t) => assert!(!t.get_ref().token.is_empty()),
                Err(e) => {
                    assert_eq!(
                        (e.code(), e.message()),
                        (Code::ResourceExhausted, "etcdserver: too many requests"),
                        "{e:?}"
                    );
                    exhausted += 1;
                }
            }
        }
        assert!(exhausted > 0, "no call refused out of {}", results.len());
        assert!(exhausted < results.len(), "every call refused");
        expect(&cluster.etcdctl_at(0).run(&[ALICE, "get", "/b"]), 0, "");
    }

    /// Writes in flight while a permission is revoked: every write is
    /// either acknowledged and stored, or answered `permission denied`
    /// (never the internal "revision of auth store is old") and not stored;
    /// once a writer is refused it stays refused, and every write sent
    /// after the revoke returned is refused.
    #[test]
    fn revoke_during_writes_in_flight() {
        const WRITERS: usize = 6;
        const MAX_PER_WRITER: usize = 5000;
        let cluster = Cluster::start(ClusterKind::Ballast);
        let ctl = cluster.etcdctl();
        set_up(&ctl);
        expect(
            &ctl.run(&[
                ROOT,
                "role",
                "grant-permission",
                "ro",
                "readwrite",
                "/w/",
                "--prefix",
            ]),
            0,
            "Role ro updated\n",
        );
        let revoked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let last_error = std::sync::Arc::new(std::sync::Mutex::new(None));
        let outcomes = block_on(async {
            let leader = cluster.leader().expect("a leader");
            let mut writers = tokio::task::JoinSet::new();
            for w in 0..WRITERS {
                // Half on the leader, half on a follower (which checks
                // first with its own, possibly older, auth state).
                let member = if w % 2 == 0 { leader } else { (leader + 1) % 3 };
                let ch = channel(&cluster, member).await;
                let token = token(&ch, "alice", "apw").await;
                let (revoked, written) = (revoked.clone(), written.clone());
                let last_error = last_error.clone();
                writers.spawn(async move {
                    let mut kv = KvClient::new(ch);
                    let mut out = Vec::new();
                    let mut sent_after = 0;
                    // Until a few were sent after the revoke returned.
                    for i in 0..MAX_PER_WRITER {
                        let after = revoked.load(std::sync::atomic::Ordering::SeqCst);
                        if after {
                            sent_after += 1;
                            if sent_after > 3 {
                                break;
                            }
                        }
                        let key = format!("/w/{w}/{i:05}");
                        let put = PutRequest {
                            key: key.clone().into_bytes(),
                            value: b"v".to_vec(),
                            ..Default::default()
                        };
                        let r = kv.put(with_token(put, &token)).await;
                        match &r {
                            Ok(_) => {
                                written.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            Err(e) => *last_error.lock().unwrap() = Some(e.clone()),
                        }
                        out.push((
                            key,
                            after,
                            r.map(|_| ())
                                .map_err(|e| (e.code(), e.message().to_string())),
                        ));
                    }
                    out
                });
            }
            // Revoke once some writes went through.
            let mut waited = 0;
            while written.load(std::sync::atomic::Ordering::SeqCst) < 20 {
                waited += 1;
                assert!(
                    waited < 3000,
                    "no writes went through: {:?}",
                    last_error.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let ctl = cluster.etcdctl();
            let revoke = tokio::task::spawn_blocking(move || {
                ctl.run(&[ROOT, "role", "revoke-permission", "ro", "/w/", "--prefix"])
            })
            .await
            .unwrap();
            expect(
                &revoke,
                0,
                "Permission of range [/w/, /w0) is revoked from role ro\n",
            );
            revoked.store(true, std::sync::atomic::Ordering::SeqCst);
            let mut all = Vec::new();
            for r in writers.join_all().await {
                all.push(r);
            }
            all
        });
        let stored: std::collections::BTreeSet<String> = block_on(async {
            let ch = channel(&cluster, 0).await;
            let token = token(&ch, "root", "rootpw").await;
            let range = RangeRequest {
                key: b"/w/".to_vec(),
                range_end: b"/w0".to_vec(),
                keys_only: true,
                ..Default::default()
            };
            let r = KvClient::new(ch)
                .range(with_token(range, &token))
                .await
                .expect("range")
                .into_inner();
            r.kvs
                .into_iter()
                .map(|kv| String::from_utf8(kv.key).unwrap())
                .collect()
        });
        let denied = (
            Code::PermissionDenied,
            "etcdserver: permission denied".to_string(),
        );
        let (mut ok, mut refused) = (0, 0);
        for writer in &outcomes {
            let mut seen_refusal = false;
            for (key, after, r) in writer {
                match r {
                    Ok(()) => {
                        assert!(!seen_refusal, "{key} written after a refusal");
                        assert!(!after, "{key} written after the revoke returned");
                        assert!(stored.contains(key), "acknowledged {key} is not stored");
                        ok += 1;
                    }
                    Err(e) => {
                        assert_eq!(e, &denied, "{key}");
                        assert!(!stored.contains(key), "refused {key} is stored");
                        seen_refusal = true;
                        refused += 1;
                    }
                }
            }
        }
        assert_eq!(stored.len(), ok, "stored keys are the acknowledged ones");
        assert!(ok >= 20 && refused > 0, "ok {ok}, refused {refused}");
    }
}
