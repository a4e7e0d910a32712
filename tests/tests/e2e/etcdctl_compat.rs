//! The etcdctl compatibility suite: real `etcdctl` (v3 API) against a real
//! three-member cluster, asserting on stdout, stderr and exit codes.
//!
//! Every case is a function in [`cases`]; the expected outputs live there
//! and only there. [`compat_suite!`] expands the case list into one `#[test]`
//! per case for a given [`ClusterKind`], so every kind is held to the very
//! same text:
//!
//! ```ignore
//! compat_suite!(etcd, ClusterKind::Etcd);
//! compat_suite!(ballast, ClusterKind::Ballast); // once Ballast can run
//! ```
//!
//! `shared` cases run on one cluster per kind (each under its own key
//! prefix, `<case name>/`); `own` cases mutate the cluster as a whole
//! (compaction, membership, leadership, from-key deletes, crashes) and get a
//! fresh cluster each.

use std::time::Duration;

use ballast_tests::{Cluster, ClusterKind, Etcdctl, Output};

/// What a case runs against.
pub struct Ctx<'a> {
    pub cluster: &'a Cluster,
    /// `etcdctl` against every member.
    pub ctl: Etcdctl,
    /// This case's key prefix, e.g. `put_get/`.
    pub prefix: String,
}

impl Ctx<'_> {
    fn new<'a>(cluster: &'a Cluster, case: &str) -> Ctx<'a> {
        Ctx {
            cluster,
            ctl: cluster.etcdctl(),
            prefix: format!("{case}/"),
        }
    }

    /// The key `name` under this case's prefix.
    fn k(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.ctl.run(args)
    }

    fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.ctl.run_with_stdin(args, stdin)
    }

    /// `put KEY VALUE`, asserting `OK`; returns the revision it created.
    fn put(&self, key: &str, value: &str) -> i64 {
        expect(&self.run(&["put", key, value]), 0, "OK\n");
        self.mod_revision(key)
    }

    /// The current mod revision of `key` (`get -w json`).
    fn mod_revision(&self, key: &str) -> i64 {
        let j = self.run(&["get", key, "-w", "json"]).ok().json();
        j["kvs"][0]["mod_revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no kv for {key}: {j}"))
    }

    /// The store's current revision (from a `get` response header).
    fn revision(&self) -> i64 {
        let j = self.run(&["get", "-w", "json", &self.k("")]).ok().json();
        j["header"]["revision"].as_i64().expect("header.revision")
    }
}

/// Asserts exit code and exact stdout.
#[track_caller]
fn expect(out: &Output, code: i32, stdout: &str) {
    assert!(
        out.code == code && out.stdout == stdout && !out.timed_out,
        "expected exit code {code} and stdout {stdout:?}, got {out:#?}"
    );
}

/// Asserts a failure: exit code, empty stdout, and stderr's `Error:` line.
#[track_caller]
fn expect_err(out: &Output, code: i32, error_line: &str) {
    assert!(
        out.code == code && out.error_line() == Some(error_line) && !out.timed_out,
        "expected exit code {code} and stderr line {error_line:?}, got {out:#?}"
    );
}

/// `k1\nv1\nk2\nv2\n…`: how `etcdctl get` prints key-value pairs.
fn kv_text(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}\n{v}\n")).collect()
}

fn b64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The text between `start` and `end` in `s`.
#[track_caller]
fn between<'s>(s: &'s str, start: &str, end: &str) -> &'s str {
    let from = s
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in {s:?}"))
        + start.len();
    let len = s[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} not after {start:?} in {s:?}"));
    &s[from..from + len]
}

fn is_hex_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 16 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// `major.minor` of a version string, for `>=` comparisons.
fn major_minor(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// A value just over the server's default `--max-request-bytes` (1.5 MiB)
/// but under the client's 2 MiB gRPC send limit (etcdctl fails by itself,
/// with `trying to send message larger than max`, above that). The server
/// must accept 2 MiB gRPC messages and then reject this with
/// `etcdserver: request is too large`.
const TOO_LARGE: usize = 1_800_000;

/// All the cases, shared and own-cluster alike. The expected outputs are
/// exactly what etcd 3.4.23 with etcdctl 3.4.23 prints. Details that matter
/// for a server imitating etcd (etcdctl builds most text from the response):
/// - ids: lease `%016x` (zero-padded), `member add/remove/promote`
///   `Member %16x … cluster %16x` (space-padded, cluster id from the
///   response header), `member list` / `endpoint status` / `move-leader` `%x`;
/// - JSON (`-w json`) omits zero fields (`count`, `deleted`, `more`,
///   `isLearner`, an event's `type` for PUT); `watch -w json` uses Go field
///   names (`Header`, `Events`, `CompactRevision`, `Canceled`, `Created`);
/// - `endpoint health` reports on stderr; `watch was canceled (…)` too.
pub mod cases {
    use super::*;

    // ------------------------------------------------------------ put / get

    pub fn put_get(c: &Ctx) {
        let k1 = c.k("k1");
        expect(&c.run(&["put", &k1, "v1"]), 0, "OK\n");
        expect(&c.run(&["get", &k1]), 0, &kv_text(&[(&k1, "v1")]));
        expect(&c.run(&["get", &c.k("missing")]), 0, "");
        expect(&c.run(&["get", &k1, "--print-value-only"]), 0, "v1\n");
        expect(
            &c.run(&["get", &k1, "--keys-only"]),
            0,
            &format!("{k1}\n\n"),
        );

        let j = c.run(&["get", &k1, "-w", "json"]).ok().json();
        let kv = &j["kvs"][0];
        assert_eq!(kv["key"], b64(k1.as_bytes()), "{j}");
        assert_eq!(kv["value"], b64(b"v1"), "{j}");
        assert_eq!(kv["version"], 1, "{j}");
        assert_eq!(kv["create_revision"], kv["mod_revision"], "{j}");
        assert!(kv.get("lease").is_none(), "no lease expected: {j}");
        assert_eq!(j["count"], 1, "{j}");
        assert!(j.get("more").is_none(), "{j}");
        let rev1 = kv["mod_revision"].as_i64().unwrap();
        assert!(j["header"]["revision"].as_i64().unwrap() >= rev1, "{j}");
        for field in ["cluster_id", "member_id", "raft_term"] {
            assert!(j["header"][field].as_u64().unwrap_or(0) > 0, "{field}: {j}");
        }

        // Overwrite, returning the previous pair.
        expect(
            &c.run(&["put", &k1, "v2", "--prev-kv"]),
            0,
            &format!("OK\n{k1}\nv1\n"),
        );
        let j = c.run(&["get", &k1, "-w", "json"]).ok().json();
        let kv = &j["kvs"][0];
        assert_eq!(kv["version"], 2, "{j}");
        assert_eq!(kv["create_revision"], rev1, "{j}");
        assert!(kv["mod_revision"].as_i64().unwrap() > rev1, "{j}");

        // A value with spaces, and a value read from stdin.
        let k2 = c.k("k2");
        expect(&c.run(&["put", &k2, "hello world"]), 0, "OK\n");
        expect(&c.run(&["get", &k2]), 0, &kv_text(&[(&k2, "hello world")]));
        expect(&c.run_stdin(&["put", &k2], "from stdin"), 0, "OK\n");
        expect(
            &c.run(&["get", &k2, "--print-value-only"]),
            0,
            "from stdin\n",
        );
    }

    pub fn put_errors(c: &Ctx) {
        expect_err(
            &c.run(&["put", "", "v"]),
            1,
            "Error: etcdserver: key is not provided",
        );
        let big = "a".repeat(TOO_LARGE);
        expect_err(
            &c.run_stdin(&["put", &c.k("big")], &big),
            1,
            "Error: etcdserver: request is too large",
        );
        // Just under the limit is fine.
        let ok = "b".repeat(1024 * 1024);
        expect(&c.run_stdin(&["put", &c.k("big")], &ok), 0, "OK\n");
        let j = c.run(&["get", &c.k("big"), "-w", "json"]).ok().json();
        assert_eq!(
            j["kvs"][0]["value"].as_str().map(str::len),
            Some(b64(ok.as_bytes()).len())
        );
    }

    pub fn get_ranges(c: &Ctx) {
        let keys = ["a", "b", "c", "d"].map(|k| c.k(k));
        for (i, k) in keys.iter().enumerate() {
            c.put(k, &(i + 1).to_string());
        }
        let p = c.prefix.as_str();
        let all = kv_text(&[
            (&keys[0], "1"),
            (&keys[1], "2"),
            (&keys[2], "3"),
            (&keys[3], "4"),
        ]);
        expect(&c.run(&["get", p, "--prefix"]), 0, &all);
        expect(
            &c.run(&["get", p, "--prefix", "--limit", "2"]),
            0,
            &kv_text(&[(&keys[0], "1"), (&keys[1], "2")]),
        );
        expect(
            &c.run(&["get", p, "--prefix", "--keys-only"]),
            0,
            &keys.iter().map(|k| format!("{k}\n\n")).collect::<String>(),
        );
        expect(
            &c.run(&["get", p, "--prefix", "--print-value-only"]),
            0,
            "1\n2\n3\n4\n",
        );
        // [a, c)
        expect(
            &c.run(&["get", &keys[0], &keys[2]]),
            0,
            &kv_text(&[(&keys[0], "1"), (&keys[1], "2")]),
        );
        // --from-key, kept inside our prefix by the limit.
        expect(
            &c.run(&["get", &keys[1], "--from-key", "--limit", "2"]),
            0,
            &kv_text(&[(&keys[1], "2"), (&keys[2], "3")]),
        );

        let j = c
            .run(&["get", p, "--prefix", "--limit", "2", "-w", "json"])
            .ok()
            .json();
        assert_eq!(j["count"], 4, "{j}");
        assert_eq!(j["more"], true, "{j}");
        assert_eq!(j["kvs"].as_array().map(Vec::len), Some(2), "{j}");

        let j = c
            .run(&["get", p, "--prefix", "--keys-only", "-w", "json"])
            .ok()
            .json();
        let kvs = j["kvs"].as_array().expect("kvs");
        assert_eq!(kvs.len(), 4, "{j}");
        assert!(kvs.iter().all(|kv| kv.get("value").is_none()), "{j}");
    }

    /// Keys a, b, c written so that every sort target gives a different order:
    /// KEY a b c · CREATE c a b · MODIFY b c a · VERSION b a c · VALUE a c b.
    pub fn get_sort(c: &Ctx) {
        let (a, b, cc) = (c.k("a"), c.k("b"), c.k("c"));
        c.put(&cc, "x0");
        c.put(&a, "x0");
        c.put(&b, "x3");
        c.put(&cc, "x0");
        c.put(&cc, "x2");
        c.put(&a, "x1");
        let p = c.prefix.as_str();
        let order = |keys: &[&str]| keys.iter().map(|k| format!("{k}\n\n")).collect::<String>();
        let cases: [(&str, [&str; 3]); 5] = [
            ("KEY", [&a, &b, &cc]),
            ("CREATE", [&cc, &a, &b]),
            ("MODIFY", [&b, &cc, &a]),
            ("VERSION", [&b, &a, &cc]),
            ("VALUE", [&a, &cc, &b]),
        ];
        for (target, asc) in cases {
            let by = format!("--sort-by={target}");
            expect(
                &c.run(&["get", p, "--prefix", "--keys-only", &by, "--order=ASCEND"]),
                0,
                &order(&asc),
            );
            let desc: Vec<&str> = asc.iter().rev().copied().collect();
            expect(
                &c.run(&["get", p, "--prefix", "--keys-only", &by, "--order=DESCEND"]),
                0,
                &order(&desc),
            );
        }
        // A target without an order sorts ascending.
        expect(
            &c.run(&["get", p, "--prefix", "--keys-only", "--sort-by=VALUE"]),
            0,
            &order(&[&a, &cc, &b]),
        );
        // An order without a target sorts by key.
        expect(
            &c.run(&["get", p, "--prefix", "--keys-only", "--order=DESCEND"]),
            0,
            &order(&[&cc, &b, &a]),
        );
        // The limit applies after sorting: the most recently modified key.
        expect(
            &c.run(&[
                "get",
                p,
                "--prefix",
                "--sort-by=MODIFY",
                "--order=DESCEND",
                "--limit=1",
            ]),
            0,
            &kv_text(&[(&a, "x1")]),
        );
        // Sort-by is parsed by etcdctl itself.
        expect_err(
            &c.run(&["get", p, "--prefix", "--sort-by=BOGUS"]),
            4,
            "Error: bad sort target BOGUS",
        );
    }

    pub fn get_rev(c: &Ctx) {
        let k = c.k("k");
        let r1 = c.put(&k, "v1");
        let r2 = c.put(&k, "v2");
        expect(&c.run(&["del", &k]), 0, "1\n");
        let r3 = c.revision();
        let r4 = c.put(&k, "v3");
        assert!(r1 < r2 && r2 < r3 && r3 < r4);

        let at = |r: i64| c.run(&["get", &k, &format!("--rev={r}")]);
        expect(&at(r1), 0, &kv_text(&[(&k, "v1")]));
        expect(&at(r2), 0, &kv_text(&[(&k, "v2")]));
        expect(&at(r3), 0, "");
        expect(&at(r4), 0, &kv_text(&[(&k, "v3")]));

        // Reading the past: the kv is as it was; the header is "now".
        let j = c
            .run(&["get", &k, &format!("--rev={r2}"), "-w", "json"])
            .ok()
            .json();
        assert_eq!(j["kvs"][0]["mod_revision"], r2, "{j}");
        assert_eq!(j["kvs"][0]["create_revision"], r1, "{j}");
        assert_eq!(j["kvs"][0]["version"], 2, "{j}");
        assert!(j["header"]["revision"].as_i64().unwrap() >= r4, "{j}");
        // Re-created after the delete: version restarts at 1.
        let j = c.run(&["get", &k, "-w", "json"]).ok().json();
        assert_eq!(j["kvs"][0]["version"], 1, "{j}");
        assert_eq!(j["kvs"][0]["create_revision"], r4, "{j}");

        expect_err(
            &at(r4 + 1_000_000),
            1,
            "Error: etcdserver: mvcc: required revision is a future revision",
        );
    }

    // ---------------------------------------------------------------- del

    pub fn del(c: &Ctx) {
        let keys = ["a", "b", "c", "d", "e"].map(|k| c.k(k));
        for (i, k) in keys.iter().enumerate() {
            c.put(k, &(i + 1).to_string());
        }
        expect(&c.run(&["del", &keys[0]]), 0, "1\n");
        expect(&c.run(&["del", &keys[0]]), 0, "0\n");
        expect(
            &c.run(&["del", &keys[1], "--prev-kv"]),
            0,
            &format!("1\n{}", kv_text(&[(&keys[1], "2")])),
        );
        // A range [c, d).
        expect(&c.run(&["del", &keys[2], &keys[3]]), 0, "1\n");
        c.put(&keys[2], "3");
        expect(
            &c.run(&["del", &c.prefix, "--prefix", "--prev-kv"]),
            0,
            &format!(
                "3\n{}",
                kv_text(&[(&keys[2], "3"), (&keys[3], "4"), (&keys[4], "5")])
            ),
        );
        expect(&c.run(&["get", &c.prefix, "--prefix"]), 0, "");
        expect(&c.run(&["del", &c.prefix, "--prefix"]), 0, "0\n");

        let j = c.run(&["del", &keys[0], "-w", "json"]).ok().json();
        assert!(j.get("deleted").is_none(), "deleted 0 is omitted: {j}");
        c.put(&keys[0], "1");
        let j = c
            .run(&["del", &keys[0], "--prev-kv", "-w", "json"])
            .ok()
            .json();
        assert_eq!(j["deleted"], 1, "{j}");
        assert_eq!(j["prev_kvs"][0]["key"], b64(keys[0].as_bytes()), "{j}");
        assert_eq!(j["prev_kvs"][0]["value"], b64(b"1"), "{j}");
    }

    /// `--from-key` reaches past our prefix, so this runs on its own cluster.
    pub fn del_from_key(cluster: &mut Cluster) {
        let c = Ctx::new(cluster, "del_from_key");
        for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
            c.put(k, v);
        }
        expect(
            &c.run(&["get", "", "--from-key"]),
            0,
            &kv_text(&[("a", "1"), ("b", "2"), ("c", "3")]),
        );
        expect(
            &c.run(&["get", "b", "--from-key", "--keys-only"]),
            0,
            "b\n\nc\n\n",
        );
        expect(
            &c.run(&["del", "b", "--from-key", "--prev-kv"]),
            0,
            &format!("2\n{}", kv_text(&[("b", "2"), ("c", "3")])),
        );
        expect(&c.run(&["get", "", "--prefix"]), 0, &kv_text(&[("a", "1")]));
        expect(&c.run(&["del", "", "--from-key"]), 0, "1\n");
        expect(&c.run(&["get", "", "--from-key"]), 0, "");
    }

    // ---------------------------------------------------------------- txn

    /// What `txn -i` prints before the result: its three prompts.
    const TXN_PROMPTS: &str =
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n";

    pub fn txn(c: &Ctx) {
        let k = c.k("k");
        let res = c.k("res");
        let rev = c.put(&k, "v1");
        let tmp = c.k("tmp");
        c.put(&tmp, "t");

        // Every compare target, all true: the success branch runs.
        let input = format!(
            "value(\"{k}\") = \"v1\"\nversion(\"{k}\") = \"1\"\nmod(\"{k}\") = \"{rev}\"\n\
             create(\"{k}\") = \"{rev}\"\n\nput {res} ok\nget {k}\n\nput {res} fail\n\n"
        );
        expect(
            &c.run_stdin(&["txn", "-i"], &input),
            0,
            &format!("{TXN_PROMPTS}SUCCESS\n\nOK\n\n{}", kv_text(&[(&k, "v1")])),
        );
        expect(&c.run(&["get", &res, "--print-value-only"]), 0, "ok\n");

        // One false compare: the failure branch runs.
        let input = format!(
            "value(\"{k}\") = \"v1\"\nversion(\"{k}\") > \"5\"\n\n\
             put {res} ok2\n\nput {res} fail\nget {k}\ndel {tmp}\n\n"
        );
        expect(
            &c.run_stdin(&["txn", "-i"], &input),
            0,
            &format!(
                "{TXN_PROMPTS}FAILURE\n\nOK\n\n{}\n1\n",
                kv_text(&[(&k, "v1")])
            ),
        );
        expect(&c.run(&["get", &res, "--print-value-only"]), 0, "fail\n");
        // A put and a delete of one key in one branch is a duplicate too.
        expect_err(
            &c.run_stdin(&["txn"], &format!("\n\nput {res} x\ndel {res}\n\n\n")),
            1,
            "Error: etcdserver: duplicate key given in txn request",
        );

        // <, >, != on revisions and values.
        let input = format!(
            "mod(\"{k}\") < \"{}\"\ncreate(\"{k}\") > \"0\"\nvalue(\"{k}\") != \"zz\"\n\n\
             get {k}\n\n\n",
            rev + 1_000_000
        );
        expect(
            &c.run_stdin(&["txn"], &input),
            0,
            &format!("SUCCESS\n\n{}", kv_text(&[(&k, "v1")])),
        );

        // Create-if-absent, the apiserver's pattern: create(key) = 0.
        let new = c.k("new");
        let input = format!("create(\"{new}\") = \"0\"\n\nput {new} created\n\nget {new}\n\n");
        expect(&c.run_stdin(&["txn"], &input), 0, "SUCCESS\n\nOK\n");
        expect(
            &c.run_stdin(&["txn"], &input),
            0,
            &format!("FAILURE\n\n{}", kv_text(&[(&new, "created")])),
        );
        // version(missing) = 0 holds too.
        let input = format!("version(\"{}\") = \"0\"\n\nget {k}\n\n\n", c.k("missing"));
        expect(
            &c.run_stdin(&["txn"], &input),
            0,
            &format!("SUCCESS\n\n{}", kv_text(&[(&k, "v1")])),
        );

        // JSON: the oneof responses, as etcdctl renders them.
        let input = format!("mod(\"{k}\") = \"{rev}\"\n\nput {res} j\nget {k}\n\n\n");
        let j = c.run_stdin(&["txn", "-w", "json"], &input).ok().json();
        assert_eq!(j["succeeded"], true, "{j}");
        let resp = j["responses"].as_array().expect("responses");
        assert_eq!(resp.len(), 2, "{j}");
        assert!(resp[0]["Response"]["ResponsePut"].is_object(), "{j}");
        let range = &resp[1]["Response"]["ResponseRange"];
        assert_eq!(range["kvs"][0]["key"], b64(k.as_bytes()), "{j}");
        assert_eq!(range["count"], 1, "{j}");
        let txn_rev = j["header"]["revision"].as_i64().unwrap();
        assert!(txn_rev > rev, "{j}");
        assert_eq!(c.mod_revision(&res), txn_rev);
    }

    pub fn txn_errors(c: &Ctx) {
        let d = c.k("d");
        expect_err(
            &c.run_stdin(&["txn"], &format!("\n\nput {d} 1\nput {d} 2\n\n\n")),
            1,
            "Error: etcdserver: duplicate key given in txn request",
        );
        // Default --max-txn-ops is 128.
        let many: String = (0..129)
            .map(|i| format!("put {}{i} x\n", c.k("op")))
            .collect();
        expect_err(
            &c.run_stdin(&["txn"], &format!("\n\n{many}\n\n")),
            1,
            "Error: etcdserver: too many operations in txn request",
        );
        let big = "a".repeat(TOO_LARGE);
        expect_err(
            &c.run_stdin(&["txn"], &format!("\n\nput {} {big}\n\n\n", c.k("big"))),
            1,
            "Error: etcdserver: request is too large",
        );
        // Nothing of the rejected txns was applied.
        expect(&c.run(&["get", &c.prefix, "--prefix"]), 0, "");
    }

    // -------------------------------------------------------------- watch

    /// Writes the history that the watch cases replay; returns its first
    /// revision. Events: PUT a=1, PUT b=2, PUT a=3, DELETE b, DELETE a.
    fn watch_history(c: &Ctx) -> i64 {
        let (a, b) = (c.k("a"), c.k("b"));
        let first = c.put(&a, "1");
        c.put(&b, "2");
        c.put(&a, "3");
        expect(&c.run(&["del", &b]), 0, "1\n");
        expect(&c.run(&["del", &a]), 0, "1\n");
        first
    }

    /// Collects exactly `n` lines from `watch ARGS` (plus a short grace to
    /// catch any extra, duplicated event) and returns them.
    fn watch_lines(c: &Ctx, args: &[&str], n: usize) -> Vec<String> {
        let s = c.ctl.spawn(args);
        let got = s.wait_for_lines(n, Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(300));
        let out = s.stop();
        assert!(
            got.is_some(),
            "watch {args:?}: wanted {n} lines, got {out:#?}"
        );
        out.stdout.lines().map(str::to_string).collect()
    }

    pub fn watch_replay(c: &Ctx) {
        let (a, b) = (c.k("a"), c.k("b"));
        let first = watch_history(c);
        let rev = format!("--rev={first}");

        let want: Vec<String> = [
            "PUT", &a, "1", //
            "PUT", &b, "2", //
            "PUT", &a, "3", //
            "DELETE", &b, "", //
            "DELETE", &a, "",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            watch_lines(c, &["watch", "--prefix", &c.prefix, &rev], 15),
            want
        );

        // One key only.
        let want: Vec<String> = ["PUT", &a, "1", "PUT", &a, "3", "DELETE", &a, ""]
            .map(String::from)
            .to_vec();
        assert_eq!(watch_lines(c, &["watch", &a, &rev], 9), want);

        // --prev-kv: an event with a previous pair prints it first.
        let want: Vec<String> = [
            "PUT", &a, "1", //
            "PUT", &b, "2", //
            "PUT", &a, "1", &a, "3", //
            "DELETE", &b, "2", &b, "", //
            "DELETE", &a, "3", &a, "",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            watch_lines(c, &["watch", "--prefix", &c.prefix, &rev, "--prev-kv"], 21),
            want
        );

        // JSON: events across however many responses the server sends.
        let s = c
            .ctl
            .spawn(&["watch", "--prefix", &c.prefix, &rev, "-w", "json"]);
        let count_events = |lines: &[String]| -> usize {
            lines
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .map(|j| j["Events"].as_array().map_or(0, Vec::len))
                .sum()
        };
        let got = s.wait_until(Duration::from_secs(15), |l| count_events(l) >= 5);
        let out = s.stop();
        assert!(got.is_some(), "{out:#?}");
        let mut events = Vec::new();
        for resp in out.json_lines() {
            assert_eq!(resp["Canceled"], false, "{resp}");
            assert!(
                resp["Header"]["cluster_id"].as_u64().unwrap_or(0) > 0,
                "{resp}"
            );
            let hdr_rev = resp["Header"]["revision"].as_i64().unwrap();
            for e in resp["Events"].as_array().into_iter().flatten() {
                assert!(
                    e["kv"]["mod_revision"].as_i64().unwrap() <= hdr_rev,
                    "{resp}"
                );
                events.push(e.clone());
            }
        }
        let summary: Vec<(i64, String)> = events
            .iter()
            .map(|e| {
                (
                    e["type"].as_i64().unwrap_or(0),
                    e["kv"]["key"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let (ka, kb) = (b64(a.as_bytes()), b64(b.as_bytes()));
        assert_eq!(
            summary,
            vec![
                (0, ka.clone()),
                (0, kb.clone()),
                (0, ka.clone()),
                (1, kb),
                (1, ka)
            ],
            "{events:#?}"
        );
        // Other cases write to the shared cluster too: revisions increase,
        // not necessarily by one.
        let revs: Vec<i64> = events
            .iter()
            .map(|e| e["kv"]["mod_revision"].as_i64().unwrap())
            .collect();
        assert_eq!(revs[0], first, "{events:#?}");
        assert!(revs.windows(2).all(|w| w[0] < w[1]), "{events:#?}");
        // A PUT carries version and value; a DELETE only key and mod_revision.
        assert_eq!(events[2]["kv"]["version"], 2);
        assert_eq!(events[2]["kv"]["value"], b64(b"3"));
        assert_eq!(events[2]["kv"]["create_revision"], first);
        assert!(events[4]["kv"].get("value").is_none(), "{:#}", events[4]);
        assert!(events[4]["kv"].get("version").is_none(), "{:#}", events[4]);
    }

    pub fn watch_live(c: &Ctx) {
        let (x, ready) = (c.k("x"), c.k("ready"));
        let s = c.ctl.spawn(&["watch", "--prefix", &c.prefix, "--prev-kv"]);
        // Events after the last `ready` event (whose value line follows it).
        let after_ready = |lines: &[String]| -> Option<Vec<String>> {
            let i = lines.iter().rposition(|l| *l == ready)?;
            Some(lines.get(i + 2..).unwrap_or_default().to_vec())
        };
        // The watch is live once it reports a write made after it started.
        let mut live = false;
        for _ in 0..50 {
            c.put(&ready, "r");
            if s.wait_until(Duration::from_millis(200), |l| after_ready(l).is_some())
                .is_some()
            {
                live = true;
                break;
            }
        }
        assert!(live, "watch never reported {ready}: {:?}", s.lines());

        c.put(&x, "1");
        c.put(&x, "2");
        expect(&c.run(&["del", &x]), 0, "1\n");
        let want: Vec<String> = [
            "PUT", &x, "1", //
            "PUT", &x, "1", &x, "2", //
            "DELETE", &x, "2", &x, "",
        ]
        .map(String::from)
        .to_vec();
        let got = s.wait_until(Duration::from_secs(15), |l| {
            after_ready(l).is_some_and(|e| e.len() >= want.len())
        });
        std::thread::sleep(Duration::from_millis(300));
        let out = s.stop();
        assert!(got.is_some(), "{out:#?}");
        let lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
        assert_eq!(after_ready(&lines).unwrap(), want, "{out:#?}");
    }

    // -------------------------------------------------------------- lease

    /// Parses `lease <hex id> granted with TTL(<n>s)`.
    fn grant(c: &Ctx, ttl: &str) -> (String, String) {
        let out = c.run(&["lease", "grant", ttl]);
        out.ok();
        let id = between(&out.stdout, "lease ", " granted").to_string();
        assert!(is_hex_id(&id), "{out:#?}");
        let granted = between(&out.stdout, "TTL(", "s)").to_string();
        expect(
            &out,
            0,
            &format!("lease {id} granted with TTL({granted}s)\n"),
        );
        (id, granted)
    }

    pub fn lease(c: &Ctx) {
        let (id, ttl) = grant(c, "300");
        assert_eq!(ttl, "300");
        let id_dec = u64::from_str_radix(&id, 16).unwrap();
        let (a, b) = (c.k("a"), c.k("b"));
        let lease_flag = format!("--lease={id}");
        expect(&c.run(&["put", &a, "1", &lease_flag]), 0, "OK\n");
        expect(&c.run(&["put", &b, "2", &lease_flag]), 0, "OK\n");
        let j = c.run(&["get", &a, "-w", "json"]).ok().json();
        assert_eq!(j["kvs"][0]["lease"].as_u64(), Some(id_dec), "{j}");

        let out = c.run(&["lease", "timetolive", &id]);
        let remaining: i64 = between(&out.stdout, "remaining(", "s)").parse().unwrap();
        assert!((290..=300).contains(&remaining), "{out:#?}");
        expect(
            &out,
            0,
            &format!("lease {id} granted with TTL(300s), remaining({remaining}s)\n"),
        );

        // Attached keys come in no particular order.
        let out = c.run(&["lease", "timetolive", &id, "--keys"]);
        out.ok();
        assert!(
            out.stdout
                .starts_with(&format!("lease {id} granted with TTL(300s), remaining(")),
            "{out:#?}"
        );
        let mut keys: Vec<&str> = between(&out.stdout, "attached keys([", "])")
            .split(' ')
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, [a.as_str(), b.as_str()], "{out:#?}");
        assert!(out.stdout.ends_with("])\n"), "{out:#?}");

        let j = c
            .run(&["lease", "timetolive", &id, "--keys", "-w", "json"])
            .ok()
            .json();
        assert_eq!(j["id"].as_u64(), Some(id_dec), "{j}");
        assert_eq!(j["granted-ttl"], 300, "{j}");
        assert!((290..=300).contains(&j["ttl"].as_i64().unwrap()), "{j}");
        let mut keys: Vec<String> = j["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        keys.sort();
        assert_eq!(keys, [b64(a.as_bytes()), b64(b.as_bytes())], "{j}");

        expect(
            &c.run(&["lease", "keep-alive", "--once", &id]),
            0,
            &format!("lease {id} keepalived with TTL(300)\n"),
        );
        let j = c
            .run(&["lease", "keep-alive", "--once", &id, "-w", "json"])
            .ok()
            .json();
        assert_eq!(j["ID"].as_u64(), Some(id_dec), "{j}");
        assert_eq!(j["TTL"], 300, "{j}");

        let out = c.run(&["lease", "list"]);
        out.ok();
        let mut lines = out.stdout.lines();
        let first = lines.next().unwrap_or("");
        assert!(
            first.starts_with("found ") && first.ends_with(" leases"),
            "{out:#?}"
        );
        let listed: Vec<&str> = lines.collect();
        assert!(listed.contains(&id.as_str()), "{out:#?}");
        assert_eq!(first, format!("found {} leases", listed.len()));
        let j = c.run(&["lease", "list", "-w", "json"]).ok().json();
        let ids: Vec<u64> = j["leases"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["id"].as_u64())
            .collect();
        assert!(ids.contains(&id_dec), "{j}");

        expect(
            &c.run(&["lease", "revoke", &id]),
            0,
            &format!("lease {id} revoked\n"),
        );
        expect(&c.run(&["get", &c.prefix, "--prefix"]), 0, "");

        // The lease is gone.
        expect_err(
            &c.run(&["lease", "revoke", &id]),
            1,
            "Error: failed to revoke lease (etcdserver: requested lease not found)",
        );
        expect(
            &c.run(&["lease", "timetolive", &id]),
            0,
            &format!("lease {id} already expired\n"),
        );
        let j = c
            .run(&["lease", "timetolive", &id, "-w", "json"])
            .ok()
            .json();
        assert_eq!(j["ttl"], -1, "{j}");
        assert_eq!(j["granted-ttl"], 0, "{j}");
        expect_err(
            &c.run(&["lease", "keep-alive", "--once", &id]),
            2,
            "Error: etcdserver: requested lease not found",
        );
        expect_err(
            &c.run(&["put", &a, "1", &lease_flag]),
            1,
            "Error: etcdserver: requested lease not found",
        );
    }

    pub fn lease_expiry(c: &Ctx) {
        // A TTL below the minimum (1.5 × election timeout) is raised to it.
        let (id, ttl) = grant(c, "1");
        assert_eq!(ttl, "2");
        let k = c.k("k");
        expect(
            &c.run(&["put", &k, "v", &format!("--lease={id}")]),
            0,
            "OK\n",
        );
        // Watch from just after the put, so the DELETE can't be missed.
        let from = format!("--rev={}", c.mod_revision(&k) + 1);
        let s = c.ctl.spawn(&["watch", &k, &from]);
        let gone = ballast_tests::process::poll(
            Duration::from_secs(20),
            Duration::from_millis(250),
            || (c.run(&["get", &k]).stdout.is_empty()).then_some(()),
        );
        assert!(gone.is_some(), "key {k} outlived its lease");
        // The expiry is a DELETE event.
        let got = s.wait_for_lines(3, Duration::from_secs(10));
        let out = s.stop();
        assert!(got.is_some(), "{out:#?}");
        assert_eq!(out.stdout, format!("DELETE\n{k}\n\n"), "{out:#?}");
        expect(
            &c.run(&["lease", "timetolive", &id]),
            0,
            &format!("lease {id} already expired\n"),
        );
    }

    // -------------------------------------------------- cluster & maintenance

    pub fn endpoint_status_health(c: &Ctx) {
        let endpoints = c.cluster.endpoints();
        let j = c.run(&["endpoint", "status", "-w", "json"]).ok().json();
        let st = j.as_array().expect("array");
        assert_eq!(st.len(), 3, "{j}");
        let mut member_ids = Vec::new();
        let leader = st[0]["Status"]["leader"].as_u64().unwrap();
        let cluster_id = st[0]["Status"]["header"]["cluster_id"].as_u64().unwrap();
        for (s, ep) in st.iter().zip(&endpoints) {
            assert_eq!(s["Endpoint"].as_str(), Some(ep.as_str()), "{j}");
            let s = &s["Status"];
            let version = s["version"].as_str().unwrap();
            assert!(major_minor(version) >= (3, 4), "version {version}");
            assert_eq!(s["leader"].as_u64(), Some(leader), "{j}");
            assert_eq!(s["header"]["cluster_id"].as_u64(), Some(cluster_id), "{j}");
            assert!(s["raftIndex"].as_u64().unwrap() > 0, "{j}");
            assert!(s["raftTerm"].as_u64().unwrap() > 0, "{j}");
            assert!(s["raftAppliedIndex"].as_u64().unwrap() > 0, "{j}");
            assert!(s["dbSize"].as_u64().unwrap() > 0, "{j}");
            assert!(s["header"]["revision"].as_i64().unwrap() >= 1, "{j}");
            assert!(s.get("isLearner").is_none(), "{j}");
            assert!(s.get("errors").is_none(), "{j}");
            member_ids.push(s["header"]["member_id"].as_u64().unwrap());
        }
        assert!(
            member_ids.contains(&leader),
            "leader {leader} not in {member_ids:?}"
        );

        // The table form: endpoint, id, version, size, leader?, learner?,
        // term, index, applied index, errors.
        let out = c.run(&["endpoint", "status"]);
        out.ok();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{out:#?}");
        for ((line, ep), id) in lines.iter().zip(&endpoints).zip(&member_ids) {
            let f: Vec<&str> = line.split(", ").collect();
            assert_eq!(f.len(), 10, "{line:?}");
            assert_eq!(f[0], ep);
            assert_eq!(f[1], format!("{id:x}"));
            assert_eq!(
                f[4],
                if *id == leader { "true" } else { "false" },
                "{line:?}"
            );
            assert_eq!(f[5], "false", "{line:?}");
            assert_eq!(f[9], "", "{line:?}");
        }

        let j = c.run(&["endpoint", "health", "-w", "json"]).ok().json();
        let mut healthy: Vec<String> = j
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                assert_eq!(h["health"], true, "{h}");
                assert!(h.get("error").is_none(), "{h}");
                h["endpoint"].as_str().unwrap().to_string()
            })
            .collect();
        healthy.sort();
        let mut want = endpoints.clone();
        want.sort();
        assert_eq!(healthy, want);

        // Plain `endpoint health` reports on stderr, one line per endpoint.
        let out = c.run(&["endpoint", "health"]);
        expect(&out, 0, "");
        let mut reported: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains(" is healthy: successfully committed proposal: took = "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        reported.sort_unstable();
        assert_eq!(reported, want, "{out:#?}");
    }

    pub fn member_list(c: &Ctx) {
        let j = c.run(&["member", "list", "-w", "json"]).ok().json();
        assert!(j["header"]["cluster_id"].as_u64().unwrap() > 0, "{j}");
        let members = j["members"].as_array().expect("members");
        assert_eq!(members.len(), 3, "{j}");
        let mut seen: Vec<(String, Vec<String>, Vec<String>)> = members
            .iter()
            .map(|m| {
                assert!(m["ID"].as_u64().unwrap() > 0, "{m}");
                assert!(m.get("isLearner").is_none(), "{m}");
                let urls = |f: &str| -> Vec<String> {
                    m[f].as_array()
                        .unwrap()
                        .iter()
                        .map(|u| u.as_str().unwrap().to_string())
                        .collect()
                };
                (
                    m["name"].as_str().unwrap().to_string(),
                    urls("peerURLs"),
                    urls("clientURLs"),
                )
            })
            .collect();
        seen.sort();
        let want: Vec<_> = c.cluster.members()[..3]
            .iter()
            .map(|m| (m.name.clone(), vec![m.peer_url()], vec![m.client_url()]))
            .collect();
        assert_eq!(seen, want);

        // Table form: id, status, name, peer URLs, client URLs, learner?
        let out = c.run(&["member", "list"]);
        out.ok();
        let mut lines: Vec<Vec<String>> = out
            .stdout
            .lines()
            .map(|l| l.split(", ").map(str::to_string).collect())
            .collect();
        lines.sort_by(|a, b| a[2].cmp(&b[2]));
        assert_eq!(lines.len(), 3, "{out:#?}");
        for (f, m) in lines.iter().zip(c.cluster.members()) {
            assert!(is_hex_id(&f[0]), "{f:?}");
            assert_eq!(
                f[1..],
                [
                    "started".to_string(),
                    m.name.clone(),
                    m.peer_url(),
                    m.client_url(),
                    "false".into()
                ],
            );
        }
    }

    pub fn maintenance(c: &Ctx) {
        // No alarms: nothing at all, and `{}` as JSON.
        expect(&c.run(&["alarm", "list"]), 0, "");
        let j = c.run(&["alarm", "list", "-w", "json"]).ok().json();
        assert!(j.get("alarms").is_none(), "{j}");

        let want: String = c
            .cluster
            .endpoints()
            .iter()
            .map(|e| format!("Finished defragmenting etcd member[{e}]\n"))
            .collect();
        expect(&c.run(&["defrag"]), 0, &want);

        // Snapshots come from one member.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.db");
        let path_s = path.to_str().unwrap();
        let out = c.cluster.etcdctl_at(0).run(&["snapshot", "save", path_s]);
        expect(&out, 0, &format!("Snapshot saved at {path_s}\n"));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "empty snapshot");
        let out = c.run(&["snapshot", "save", path_s]);
        assert_eq!(out.code, 5, "{out:#?}");
        assert!(
            out.error_line().is_some_and(|l| l.starts_with(
                "Error: snapshot must be requested to one selected node, not multiple"
            )),
            "{out:#?}"
        );
    }

    // ------------------------------------------------- own-cluster cases

    pub fn compaction(cluster: &mut Cluster) {
        let c = Ctx::new(cluster, "compaction");
        let k = c.k("k");
        let r1 = c.put(&k, "v1");
        let r2 = c.put(&k, "v2");
        let r3 = c.put(&k, "v3");

        expect(
            &c.run(&["compaction", &r2.to_string()]),
            0,
            &format!("compacted revision {r2}\n"),
        );
        let compacted = "Error: etcdserver: mvcc: required revision has been compacted";
        expect_err(&c.run(&["get", &k, &format!("--rev={r1}")]), 1, compacted);
        expect(
            &c.run(&["get", &k, &format!("--rev={r2}")]),
            0,
            &kv_text(&[(&k, "v2")]),
        );
        expect_err(&c.run(&["compaction", &r2.to_string()]), 1, compacted);
        expect_err(&c.run(&["compaction", &r1.to_string()]), 1, compacted);
        expect_err(
            &c.run(&["compaction", &(r3 + 1_000_000).to_string()]),
            1,
            "Error: etcdserver: mvcc: required revision is a future revision",
        );

        // A watch from a compacted revision is canceled.
        let out = c.ctl.clone().with_timeout(Duration::from_secs(15)).run(&[
            "watch",
            &k,
            &format!("--rev={r1}"),
        ]);
        assert_eq!(out.code, 5, "{out:#?}");
        assert_eq!(out.stdout, "", "{out:#?}");
        assert!(
            out.stderr.contains(
                "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n"
            ),
            "{out:#?}"
        );
        assert_eq!(
            out.error_line(),
            Some("Error: watch is canceled by the server")
        );
        let out = c.ctl.clone().with_timeout(Duration::from_secs(15)).run(&[
            "watch",
            &k,
            &format!("--rev={r1}"),
            "-w",
            "json",
        ]);
        assert_eq!(out.code, 5, "{out:#?}");
        let j = out.json();
        assert_eq!(j["Canceled"], true, "{j}");
        assert_eq!(j["CompactRevision"], r2, "{j}");
        assert_eq!(j["Events"], serde_json::json!([]), "{j}");

        expect(
            &c.run(&["compaction", "--physical", &r3.to_string()]),
            0,
            &format!("compacted revision {r3}\n"),
        );
        // Hashing at the compacted revision itself is refused too.
        let out = c.run(&["endpoint", "hashkv", &format!("--rev={r3}")]);
        expect_err(&out, 1, compacted);
        assert!(
            out.stderr.contains(&format!(
                "Failed to get the hash of endpoint {} (etcdserver: mvcc: required revision has been compacted)",
                c.cluster.member(0).endpoint()
            )),
            "{out:#?}"
        );
        // Every member hashes the same history.
        let r4 = c.put(&k, "v4");
        let out = ballast_tests::process::poll(
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                let out = c.run(&["endpoint", "hashkv", &format!("--rev={r4}"), "-w", "json"]);
                (out.code == 0).then_some(out)
            },
        )
        .expect("endpoint hashkv never succeeded on all members");
        let j = out.json();
        let hashes: Vec<(u64, i64)> = j
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["HashKV"]["hash"].as_u64().unwrap(),
                    h["HashKV"]["compact_revision"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(hashes.len(), 3, "{j}");
        assert!(hashes.iter().all(|h| *h == hashes[0]), "{j}");
        assert_eq!(hashes[0].1, r3, "{j}");
        assert!(hashes[0].0 != 0, "{j}");
    }

    /// Parses `Member <id> added to cluster <cid>` and the env lines that
    /// `etcdctl member add` prints; returns (id, cluster id, initial cluster),
    /// the ids in plain hex (etcdctl pads them to 16 with spaces: `%16x`).
    fn parse_member_add(out: &Output, name: &str, peer: &str) -> (String, String, String) {
        out.ok();
        let id = between(&out.stdout, "Member ", " added to cluster ")
            .trim()
            .to_string();
        let cid = between(&out.stdout, " added to cluster ", "\n")
            .trim()
            .to_string();
        assert!(is_hex_id(&id) && is_hex_id(&cid), "{out:#?}");
        let initial = between(&out.stdout, "ETCD_INITIAL_CLUSTER=\"", "\"\n").to_string();
        expect(
            out,
            0,
            &format!(
                "Member {id:>16} added to cluster {cid:>16}\n\nETCD_NAME=\"{name}\"\n\
                 ETCD_INITIAL_CLUSTER=\"{initial}\"\nETCD_INITIAL_ADVERTISE_PEER_URLS=\"{peer}\"\n\
                 ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"
            ),
        );
        (id, cid, initial)
    }

    pub fn membership(cluster: &mut Cluster) {
        let ctl = cluster.etcdctl();
        let cid_hex = {
            let j = ctl.run(&["member", "list", "-w", "json"]).ok().json();
            format!("{:x}", j["header"]["cluster_id"].as_u64().unwrap())
        };

        // A voter that never starts.
        let i3 = cluster.prepare_member("m3");
        let peer3 = cluster.member(i3).peer_url();
        // A just-started etcd refuses new members ("unhealthy cluster")
        // until its peers have been connected for 5 s.
        let out = ballast_tests::process::poll(
            Duration::from_secs(30),
            Duration::from_millis(250),
            || {
                let out = ctl.run(&["member", "add", "m3", &format!("--peer-urls={peer3}")]);
                (!out.stderr.contains("etcdserver: unhealthy cluster")).then_some(out)
            },
        )
        .expect("member add kept failing with: unhealthy cluster");
        let (id3, cid, initial) = parse_member_add(&out, "m3", &peer3);
        assert_eq!(cid, cid_hex);
        let mut pairs: Vec<&str> = initial.split(',').collect();
        pairs.sort_unstable();
        let mut want: Vec<String> = cluster
            .members()
            .iter()
            .filter(|m| !m.removed)
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        want.sort();
        assert_eq!(pairs, want);

        let out = ctl.run(&["member", "list"]);
        out.ok();
        assert_eq!(out.stdout.lines().count(), 4, "{out:#?}");
        assert!(
            out.stdout
                .lines()
                .any(|l| l == format!("{id3}, unstarted, , {peer3}, , false")),
            "{out:#?}"
        );
        // With a voter down, no more members may join.
        let i4 = cluster.prepare_member("m4");
        let peer4 = cluster.member(i4).peer_url();
        expect_err(
            &ctl.run(&[
                "member",
                "add",
                "m4",
                "--learner",
                &format!("--peer-urls={peer4}"),
            ]),
            1,
            "Error: etcdserver: unhealthy cluster",
        );
        expect(
            &ctl.run(&["member", "remove", &id3]),
            0,
            &format!("Member {id3:>16} removed from cluster {cid_hex:>16}\n"),
        );
        cluster.forget_member(i3);
        expect_err(
            &ctl.run(&["member", "remove", &id3]),
            1,
            "Error: etcdserver: member not found",
        );

        // A learner: listed as such, promotable only once in sync.
        let out = ctl.run(&[
            "member",
            "add",
            "m4",
            "--learner",
            &format!("--peer-urls={peer4}"),
        ]);
        let (id4, _, initial) = parse_member_add(&out, "m4", &peer4);
        let j = ctl.run(&["member", "list", "-w", "json"]).ok().json();
        let learner = j["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["peerURLs"][0] == peer4.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{peer4} not in {j}"));
        assert_eq!(learner["isLearner"], true, "{j}");
        assert!(learner.get("name").is_none(), "unstarted: no name yet: {j}");
        assert_eq!(format!("{:x}", learner["ID"].as_u64().unwrap()), id4);
        expect_err(
            &ctl.run(&["member", "promote", &id4]),
            1,
            "Error: etcdserver: can only promote a learner member which is in sync with leader",
        );

        cluster.start_added_member(i4, &initial);
        let promoted = ballast_tests::process::poll(
            Duration::from_secs(30),
            Duration::from_millis(500),
            || {
                let out = ctl.run(&["member", "promote", &id4]);
                (out.code == 0).then_some(out)
            },
        )
        .expect("the learner never became promotable");
        expect(
            &promoted,
            0,
            &format!("Member {id4:>16} promoted in cluster {cid_hex:>16}\n"),
        );
        let j = cluster
            .etcdctl()
            .run(&["member", "list", "-w", "json"])
            .ok()
            .json();
        let members = j["members"].as_array().unwrap();
        assert_eq!(members.len(), 4, "{j}");
        assert!(members.iter().all(|m| m.get("isLearner").is_none()), "{j}");
        let mut names: Vec<&str> = members.iter().filter_map(|m| m["name"].as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["m0", "m1", "m2", "m4"], "{j}");

        expect(
            &ctl.run(&["member", "remove", &id4]),
            0,
            &format!("Member {id4:>16} removed from cluster {cid_hex:>16}\n"),
        );
        cluster.forget_member(i4);
        cluster.wait_healthy(ballast_tests::cluster::HEALTHY_TIMEOUT);
        let j = cluster
            .etcdctl()
            .run(&["member", "list", "-w", "json"])
            .ok()
            .json();
        assert_eq!(j["members"].as_array().unwrap().len(), 3, "{j}");
    }

    pub fn move_leader(cluster: &mut Cluster) {
        let ctl = cluster.etcdctl();
        let leader = cluster.leader().expect("a leader");
        let target = (leader + 1) % 3;
        let (lid, tid) = (cluster.member_id_hex(leader), cluster.member_id_hex(target));
        expect(
            &ctl.run(&["move-leader", &tid]),
            0,
            &format!("Leadership transferred from {lid} to {tid}\n"),
        );
        let moved = ballast_tests::process::poll(
            Duration::from_secs(10),
            Duration::from_millis(100),
            || (cluster.leader() == Some(target)).then_some(()),
        );
        assert!(
            moved.is_some(),
            "leader is {:?}, wanted {target}",
            cluster.leader()
        );

        // etcdctl must reach the leader among its endpoints.
        let follower = (target + 1) % 3;
        let out = cluster.etcdctl_at(follower).run(&["move-leader", &lid]);
        expect_err(
            &out,
            128,
            &format!(
                "Error: no leader endpoint given at [{}]",
                cluster.member(follower).endpoint()
            ),
        );
        expect_err(
            &ctl.run(&["move-leader", "1234"]),
            1,
            "Error: etcdserver: bad leader transferee",
        );
        let out = ctl.run(&["move-leader", "zz"]);
        assert_eq!(out.code, 128, "{out:#?}");
    }

    /// The harness's fault tools: SIGKILL and SIGTERM a member, restart it.
    pub fn kill_restart(cluster: &mut Cluster) {
        let ctl = cluster.etcdctl();
        expect(&ctl.run(&["put", "k", "v1"]), 0, "OK\n");
        cluster.kill(0);
        assert!(!cluster.member_mut(0).is_running());
        // Two of three still make a quorum (once they elected a leader, if
        // member 0 led).
        let rest = Etcdctl::new([cluster.member(1).endpoint(), cluster.member(2).endpoint()]);
        let put = |value: &str| {
            ballast_tests::process::poll(
                Duration::from_secs(20),
                Duration::from_millis(200),
                || {
                    let out = rest.run(&["put", "k", value]);
                    (out.code == 0).then_some(out)
                },
            )
            .unwrap_or_else(|| panic!("put k={value} never succeeded"))
        };
        expect(&put("v2"), 0, "OK\n");
        let out = cluster
            .etcdctl_at(0)
            .with_timeout(Duration::from_secs(15))
            .run(&["get", "k", "--dial-timeout=1s", "--command-timeout=2s"]);
        assert_ne!(out.code, 0, "{out:#?}");
        cluster.restart(0);
        let caught_up = ballast_tests::process::poll(
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                let out = cluster.etcdctl_at(0).run(&[
                    "get",
                    "k",
                    "--consistency=s",
                    "--print-value-only",
                ]);
                (out.stdout == "v2\n").then_some(())
            },
        );
        assert!(caught_up.is_some(), "member 0 never caught up");

        cluster.terminate(1);
        assert!(!cluster.member_mut(1).is_running());
        let rest = Etcdctl::new([cluster.member(0).endpoint(), cluster.member(2).endpoint()]);
        let out = ballast_tests::process::poll(
            Duration::from_secs(20),
            Duration::from_millis(200),
            || {
                let out = rest.run(&["put", "k", "v3"]);
                (out.code == 0).then_some(out)
            },
        )
        .expect("put k=v3 never succeeded");
        expect(&out, 0, "OK\n");
        cluster.restart(1);
        cluster.wait_healthy(ballast_tests::cluster::HEALTHY_TIMEOUT);
        expect(&ctl.run(&["get", "k", "--print-value-only"]), 0, "v3\n");
    }
}

/// Runs a shared case on the kind's shared cluster.
fn run_shared(kind: ClusterKind, case: &str, f: fn(&Ctx)) {
    let cluster = Cluster::shared(kind);
    f(&Ctx::new(cluster, case));
}

/// Runs an own-cluster case on a fresh cluster (dropped, and so killed,
/// even if the case panics).
fn run_own(kind: ClusterKind, f: fn(&mut Cluster)) {
    let mut cluster = Cluster::start(kind);
    f(&mut cluster);
}

/// Expands to `mod $module { #[test] fn <case>() … }` with one test per case
/// of the suite, each running against a cluster of `$kind`.
macro_rules! compat_suite {
    ($module:ident, $kind:expr) => {
        compat_suite!(@expand $module, $kind;
            shared: [
                put_get, put_errors, get_ranges, get_sort, get_rev, del, txn, txn_errors,
                watch_replay, watch_live, lease, lease_expiry, endpoint_status_health,
                member_list, maintenance,
            ];
            own: [del_from_key, compaction, membership, move_leader, kill_restart];
        );
    };
    (@expand $module:ident, $kind:expr;
        shared: [$($shared:ident),* $(,)?];
        own: [$($own:ident),* $(,)?];
    ) => {
        mod $module {
            use super::*;
            $(
                #[test]
                fn $shared() {
                    run_shared($kind, stringify!($shared), cases::$shared);
                }
            )*
            $(
                #[test]
                fn $own() {
                    run_own($kind, cases::$own);
                }
            )*
        }
    };
}

compat_suite!(etcd, ClusterKind::Etcd);
compat_suite!(ballast, ClusterKind::Ballast);
