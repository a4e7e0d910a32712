//! The real kubectl against an apiserver on a real etcd 3.4 cluster and on
//! a Ballast cluster. Prints the transcript; asserts exit codes and output.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ballast_apiserver::CacheConfig;
use ballast_tests::ClusterKind;

const KUBECTL: &str = "/usr/bin/kubectl";
/// The longest one kubectl command may run.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// A deployment, a node and a pod bound to it (no kubelet runs here).
const WORKLOADS: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: smoke
spec:
  replicas: 1
  selector:
    matchLabels: {app: webd}
  template:
    metadata:
      labels: {app: webd}
    spec:
      containers:
      - name: c
        image: nginx:1.27
---
apiVersion: v1
kind: Node
metadata:
  name: smoke-node
---
apiVersion: v1
kind: Pod
metadata:
  name: bound
  namespace: smoke
spec:
  nodeName: smoke-node
  containers:
  - name: c
    image: busybox:1.36
";

const MANIFEST: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: smoke
data:
  a: \"1\"
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: smoke
  labels:
    app: web
spec:
  containers:
  - name: c
    image: nginx:1.27
";

struct Kubectl<'a> {
    dir: &'a Path,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str]) -> Out {
        println!("$ kubectl {}", args.join(" "));
        let mut child = Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", self.dir.join("kubeconfig"))
            .env("HOME", self.dir)
            .current_dir(self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        let started = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > COMMAND_DEADLINE {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        let o = Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        print!("{}", o.stdout);
        print!("{}", o.stderr);
        println!("[exit {}]", o.code);
        o
    }

    /// Starts a long-running kubectl (e.g. `get -w`).
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        println!("$ kubectl {} &", args.join(" "));
        Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", self.dir.join("kubeconfig"))
            .env("HOME", self.dir)
            .current_dir(self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(o.code, 0, "kubectl {args:?} failed: {}", o.stderr);
        o.stdout
    }
}

/// A stand-in for the node's kubelet (the real one is another crate, being
/// written in parallel): answers every `/containerLogs/…` GET with the
/// request path as the log text, for up to a minute.
fn fake_kubelet() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let until = Instant::now() + COMMAND_DEADLINE;
        while Instant::now() < until {
            let Ok((mut sock, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = sock.set_nonblocking(false);
            let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let n = sock.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let body = format!("log of {path}\n");
            let _ = write!(
                sock,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// Validation, scale, describe, events, logs and graceful deletion.
fn workloads(k: &Kubectl<'_>) {
    std::fs::write(k.dir.join("workloads.yaml"), WORKLOADS).expect("manifest");
    // Server-side field validation (kubectl's default --validate=strict).
    let deployment = WORKLOADS.split("---").next().unwrap_or_default();
    let bad = deployment.replace("  replicas: 1\n", "  replicas: 1\n  bogus: 1\n");
    std::fs::write(k.dir.join("bad.yaml"), bad).expect("manifest");
    let refused = k.run(&["apply", "-f", "bad.yaml"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("strict decoding error: unknown field \"spec.bogus\""),
        "{}",
        refused.stderr
    );
    let warned = k.run(&["create", "--validate=warn", "-f", "bad.yaml"]);
    assert_eq!(warned.code, 0, "{}", warned.stderr);
    assert!(
        warned.stderr.contains("unknown field \"spec.bogus\""),
        "{}",
        warned.stderr
    );
    k.ok(&["delete", "-f", "bad.yaml", "--wait=false"]);
    let applied = k.ok(&["apply", "-f", "workloads.yaml"]);
    assert!(applied.contains("deployment.apps/web created"), "{applied}");

    // scale (the scale subresource).
    assert!(k
        .ok(&["scale", "deployment/web", "-n", "smoke", "--replicas=3"])
        .contains("deployment.apps/web scaled"));
    let replicas = [
        "get",
        "deployment",
        "web",
        "-n",
        "smoke",
        "-o",
        "jsonpath={.spec.replicas}",
    ];
    assert_eq!(k.ok(&replicas), "3");
    let stale = k.run(&[
        "scale",
        "deployment",
        "web",
        "-n",
        "smoke",
        "--current-replicas=2",
        "--replicas=1",
    ]);
    assert_eq!(stale.code, 1, "a failed precondition");
    assert_eq!(k.ok(&replicas), "3");
    let table = k.ok(&["get", "deployments", "-n", "smoke"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let described = k.ok(&["describe", "deployment", "web", "-n", "smoke"]);
    assert!(described.contains("3 desired"), "{described}");

    // An event about the bound pod shows in `describe pod` and `get events`.
    let uid = k.ok(&[
        "get",
        "pod",
        "bound",
        "-n",
        "smoke",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let event = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: bound.1\n  namespace: smoke\n\
         involvedObject:\n  kind: Pod\n  name: bound\n  namespace: smoke\n  uid: {uid}\n\
         reason: Scheduled\nmessage: Successfully assigned smoke/bound to smoke-node\ntype: Normal\n\
         source:\n  component: default-scheduler\ncount: 1\n"
    );
    std::fs::write(k.dir.join("event.yaml"), event).expect("event");
    k.ok(&["create", "-f", "event.yaml"]);
    let described = k.ok(&["describe", "pod", "bound", "-n", "smoke"]);
    assert!(
        described.contains("Node:         smoke-node"),
        "{described}"
    );
    let events_at = described.find("Events:").expect("an Events section");
    assert!(
        described[events_at..].contains("Scheduled")
            && described[events_at..].contains("default-scheduler"),
        "{described}"
    );
    let events = k.ok(&["get", "events", "-n", "smoke"]);
    let header: Vec<&str> = events
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert!(events.contains("pod/bound"), "{events}");
    let node = k.ok(&["describe", "node", "smoke-node"]);
    assert!(node.contains("Name:               smoke-node"), "{node}");

    // logs: through the apiserver to the node's kubelet.
    let port = fake_kubelet();
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    k.ok(&[
        "patch",
        "node",
        "smoke-node",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
    assert_eq!(
        k.ok(&["logs", "bound", "-n", "smoke", "--tail=5"]),
        "log of /containerLogs/smoke/bound/c?tailLines=5\n"
    );
    let wrong = k.run(&["logs", "bound", "-n", "smoke", "-c", "nope"]);
    assert_eq!(wrong.code, 1);
    assert!(
        wrong
            .stderr
            .contains("container nope is not valid for pod bound"),
        "{}",
        wrong.stderr
    );

    // Graceful deletion of a bound pod: Terminating until the final delete.
    k.ok(&[
        "delete",
        "pod",
        "bound",
        "-n",
        "smoke",
        "--grace-period=20",
        "--wait=false",
    ]);
    let row = k.ok(&["get", "pod", "bound", "-n", "smoke", "--no-headers"]);
    assert!(row.contains("Terminating"), "{row}");
    let grace = k.ok(&[
        "get",
        "pod",
        "bound",
        "-n",
        "smoke",
        "-o",
        "jsonpath={.metadata.deletionGracePeriodSeconds}",
    ]);
    assert_eq!(grace, "20");
    k.ok(&[
        "delete",
        "pod",
        "bound",
        "-n",
        "smoke",
        "--grace-period=0",
        "--force",
    ]);
    let gone = k.run(&["get", "pod", "bound", "-n", "smoke"]);
    assert_eq!(gone.code, 1);
    k.ok(&[
        "delete",
        "-f",
        "workloads.yaml",
        "--wait=false",
        "--ignore-not-found",
    ]);
}

/// Typed `create` commands and `run`, which send protobuf bodies: what
/// they created reads back as the flags asked. Deletes what it made.
fn typed_creates(k: &Kubectl<'_>) {
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&k.ok(args)).expect("kubectl JSON output")
    };
    // `-v=8` prints the request headers: the body really is protobuf.
    let sends_protobuf = |args: &[&str]| {
        let o = k.run(&[&["-v=8"], args].concat());
        assert_eq!(o.code, 0, "kubectl {args:?} failed: {}", o.stderr);
        assert!(
            o.stderr
                .contains("Content-Type: application/vnd.kubernetes.protobuf"),
            "kubectl {args:?} sent no protobuf body"
        );
    };
    sends_protobuf(&[
        "create",
        "deployment",
        "typed",
        "-n",
        "smoke",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=80",
    ]);
    let d = json(&["get", "deployment", "typed", "-n", "smoke", "-o", "json"]);
    assert_eq!(d["spec"]["replicas"], 2, "{d}");
    assert_eq!(d["metadata"]["labels"]["app"], "typed", "{d}");
    assert_eq!(
        d["spec"]["selector"],
        serde_json::json!({"matchLabels": {"app": "typed"}})
    );
    assert_eq!(d["spec"]["template"]["metadata"]["labels"]["app"], "typed");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["name"], "nginx", "{d}");
    assert_eq!(c["image"], "nginx:1.27", "{d}");
    assert_eq!(c["ports"][0]["containerPort"], 80, "{d}");

    sends_protobuf(&[
        "create",
        "deployment",
        "pair",
        "-n",
        "smoke",
        "--image=nginx:1.27",
        "--image=busybox:1.36",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "deployment",
            "pair",
            "-n",
            "smoke",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name} {.spec.template.spec.containers[*].image}",
        ]),
        "nginx busybox nginx:1.27 busybox:1.36"
    );

    sends_protobuf(&[
        "create",
        "service",
        "clusterip",
        "typed",
        "-n",
        "smoke",
        "--tcp=80:8080",
    ]);
    let s = json(&["get", "service", "typed", "-n", "smoke", "-o", "json"]);
    assert_eq!(s["spec"]["type"], "ClusterIP", "{s}");
    assert_eq!(s["spec"]["ports"][0]["port"], 80, "{s}");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080, "{s}");
    assert_eq!(s["spec"]["selector"]["app"], "typed", "{s}");
    sends_protobuf(&[
        "create",
        "service",
        "nodeport",
        "typed-np",
        "-n",
        "smoke",
        "--tcp=81:8081",
    ]);
    let s = json(&["get", "service", "typed-np", "-n", "smoke", "-o", "json"]);
    assert_eq!(s["spec"]["type"], "NodePort", "{s}");
    assert_eq!(s["spec"]["ports"][0]["port"], 81, "{s}");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 8081, "{s}");

    // `run` builds its Pod with the dynamic client, which sends JSON.
    k.ok(&[
        "run",
        "runner",
        "-n",
        "smoke",
        "--image=busybox:1.36",
        "--restart=Never",
        "--env=GREETING=hi",
        "--port=8080",
        "--labels=tier=batch",
        "--",
        "sleep",
        "3600",
    ]);
    let p = json(&["get", "pod", "runner", "-n", "smoke", "-o", "json"]);
    let c = &p["spec"]["containers"][0];
    assert_eq!(c["image"], "busybox:1.36", "{p}");
    assert_eq!(c["args"], serde_json::json!(["sleep", "3600"]), "{p}");
    assert_eq!(
        c["env"],
        serde_json::json!([{"name": "GREETING", "value": "hi"}])
    );
    assert_eq!(c["ports"][0]["containerPort"], 8080, "{p}");
    assert_eq!(p["spec"]["restartPolicy"], "Never", "{p}");
    assert_eq!(p["metadata"]["labels"]["tier"], "batch", "{p}");

    sends_protobuf(&[
        "create",
        "configmap",
        "typed-cfg",
        "-n",
        "smoke",
        "--from-literal=a=1",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "configmap",
            "typed-cfg",
            "-n",
            "smoke",
            "-o",
            "jsonpath={.data.a}"
        ]),
        "1"
    );

    k.ok(&["delete", "pod", "runner", "-n", "smoke"]);
    k.ok(&["delete", "deployment", "typed", "pair", "-n", "smoke"]);
    k.ok(&["delete", "service", "typed", "typed-np", "-n", "smoke"]);
    k.ok(&["delete", "configmap", "typed-cfg", "-n", "smoke"]);
}

/// Protobuf encoding, by hand, for request bodies no kubectl command sends.
mod pb {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field.
    pub fn ld(field: u64, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint((field << 3) | 2, &mut out);
        varint(b.len() as u64, &mut out);
        out.extend_from_slice(b);
        out
    }

    /// A string field.
    pub fn st(field: u64, s: &str) -> Vec<u8> {
        ld(field, s.as_bytes())
    }

    /// A varint field.
    pub fn vi(field: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(field << 3, &mut out);
        varint(v, &mut out);
        out
    }

    /// `k8s\0` + runtime.Unknown{TypeMeta, raw}.
    pub fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [st(1, api_version), st(2, kind)].concat();
        [b"k8s\0".to_vec(), ld(1, &type_meta), ld(2, raw)].concat()
    }
}

/// Sends one protobuf POST; returns the status code and body.
type Post<'a> = &'a dyn Fn(&str, Vec<u8>) -> (u16, serde_json::Value);

/// Protobuf bodies written by hand (a Lease, as a typed client would send
/// it; no kubectl command does), and the 400/415 answers to bodies that
/// cannot be read.
fn protobuf_posts(k: &Kubectl<'_>, post: Post<'_>) {
    use pb::{envelope, ld, st, vi};
    let leases = "/apis/coordination.k8s.io/v1/namespaces/smoke/leases";
    let acquired = [vi(1, 1_700_000_000), vi(2, 123_456_789)].concat();
    let spec = [
        st(1, "node-a"),
        vi(2, 40),
        ld(3, &acquired),
        ld(4, &acquired),
        vi(5, 0),
    ]
    .concat();
    let lease = [ld(1, &st(1, "typed-lease")), ld(2, &spec)].concat();
    let (code, body) = post(leases, envelope("coordination.k8s.io/v1", "Lease", &lease));
    assert_eq!(code, 201, "{body}");
    let got: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "lease", "typed-lease", "-n", "smoke", "-o", "json"]))
            .expect("lease JSON");
    assert_eq!(
        got["spec"],
        serde_json::json!({"holderIdentity": "node-a", "leaseDurationSeconds": 40,
                           "acquireTime": "2023-11-14T22:13:20.123456Z",
                           "renewTime": "2023-11-14T22:13:20.123456Z",
                           "leaseTransitions": 0})
    );
    k.ok(&["delete", "lease", "typed-lease", "-n", "smoke"]);

    // A body cut short: 400.
    let (code, body) = post(leases, b"k8s\0\x0a\xff".to_vec());
    assert_eq!(code, 400, "{body}");
    // A kind this decoder does not read: 415.
    let configmaps = "/api/v1/namespaces/smoke/configmaps";
    let (code, body) = post(
        configmaps,
        envelope("scheduling.k8s.io/v1", "PriorityClass", b""),
    );
    assert_eq!(code, 415, "{body}");
    assert_eq!(body["reason"], "UnsupportedMediaType", "{body}");
    // A field it does not read, holding data: 415, not silently dropped.
    let pods = "/api/v1/namespaces/smoke/pods";
    let pod = [ld(1, &st(1, "with-status")), ld(3, &st(1, "Running"))].concat();
    let (code, body) = post(pods, envelope("v1", "Pod", &pod));
    assert_eq!(code, 415, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("field 3 of Pod")),
        "{body}"
    );
}

async fn smoke(kind: ClusterKind) {
    if !Path::new(KUBECTL).exists() {
        println!("SKIPPED: {KUBECTL} is not installed");
        return;
    }
    let api = common::start(kind, CacheConfig::default()).await;
    let pods_cache = api
        .server
        .as_ref()
        .and_then(|s| s.cache("pods"))
        .expect("the pods cache")
        .clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ballast\n  cluster:\n    server: http://{}\n\
         contexts:\n- name: ballast\n  context:\n    cluster: ballast\n    user: nobody\n\
         current-context: ballast\nusers:\n- name: nobody\n  user: {{}}\n",
        api.addr
    );
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig).expect("kubeconfig");
    std::fs::write(dir.path().join("smoke.yaml"), MANIFEST).expect("manifest");
    let path = dir.path().to_path_buf();
    let kind_name = kind.name();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let post = |path: &str, body: Vec<u8>| {
            rt.block_on(api.raw(
                "POST",
                path,
                Some(body.into()),
                "application/vnd.kubernetes.protobuf",
            ))
        };
        println!("--- kubectl against an apiserver on {kind_name}");
        let k = Kubectl { dir: &path };
        let version = k.ok(&["version", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&version).expect("version JSON");
        assert_eq!(
            v["serverVersion"]["gitVersion"],
            ballast_apiserver::KUBE_VERSION
        );
        assert!(k
            .ok(&["create", "namespace", "smoke"])
            .contains("namespace/smoke created"));
        let watchers_before = pods_cache.watcher_count();
        let mut watcher = k.spawn(&["get", "pods", "-n", "smoke", "-w"]);
        // Write only once kubectl's watch is registered in this apiserver's
        // pod cache (it watches from its list's resourceVersion, so from
        // then on nothing is missed).
        let deadline = Instant::now() + COMMAND_DEADLINE;
        while pods_cache.watcher_count() <= watchers_before {
            assert!(Instant::now() < deadline, "kubectl get -w never watched");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Typed `create` commands send protobuf bodies; RBAC objects decode.
        k.ok(&[
            "create", "role", "reader", "-n", "smoke", "--verb=get,list", "--resource=pods",
        ]);
        k.ok(&[
            "create", "rolebinding", "alice-reads", "-n", "smoke", "--role=reader", "--user=alice",
        ]);
        k.ok(&[
            "create", "clusterrolebinding", "alice-views", "--clusterrole=view", "--user=alice",
        ]);
        let role: serde_json::Value =
            serde_json::from_str(&k.ok(&["get", "role", "reader", "-n", "smoke", "-o", "json"]))
                .expect("role JSON");
        assert_eq!(
            role["rules"],
            serde_json::json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}])
        );
        let binding = k.ok(&[
            "get", "rolebinding", "alice-reads", "-n", "smoke", "-o",
            "jsonpath={.roleRef.name} {.subjects[0].name}",
        ]);
        assert_eq!(binding, "reader alice");
        k.ok(&["delete", "clusterrolebinding", "alice-views"]);
        typed_creates(&k);
        protobuf_posts(&k, &post);
        let applied = k.ok(&["apply", "-f", "smoke.yaml"]);
        assert!(applied.contains("configmap/cfg created"), "{applied}");
        assert!(applied.contains("pod/web created"), "{applied}");
        // The usual columns, from server-side Tables.
        let table = k.ok(&["get", "pods", "-n", "smoke"]);
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(&row[..4], ["web", "0/1", "Pending", "0"]);
        let wide = k.ok(&["get", "pods", "-A", "-o", "wide"]);
        assert!(
            wide.lines().next().unwrap_or_default().contains("NODE"),
            "{wide}"
        );
        assert!(wide.contains("smoke") && wide.contains("web"), "{wide}");
        let pods: serde_json::Value =
            serde_json::from_str(&k.ok(&["get", "pods", "-n", "smoke", "-o", "json"]))
                .expect("pods JSON");
        let items = pods["items"].as_array().expect("items");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["name"], "web");
        assert_eq!(items[0]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            items[0]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(
            k.ok(&[
                "get",
                "configmap",
                "cfg",
                "-n",
                "smoke",
                "-o",
                "jsonpath={.data.a}"
            ]),
            "1"
        );
        assert_eq!(
            k.ok(&["get", "pods", "-n", "smoke", "-l", "app=web", "-o", "name"])
                .trim(),
            "pod/web"
        );
        assert_eq!(
            k.ok(&["get", "pods", "-n", "smoke", "-l", "app!=web", "-o", "name"])
                .trim(),
            ""
        );
        // apply again with a change: a strategic merge patch.
        let changed = MANIFEST
            .replace("nginx:1.27", "nginx:1.28")
            .replace("a: \"1\"", "a: \"2\"");
        std::fs::write(k.dir.join("smoke2.yaml"), changed).expect("manifest");
        let applied = k.ok(&["apply", "-f", "smoke2.yaml"]);
        assert!(
            applied.contains("configmap/cfg configured") && applied.contains("pod/web configured"),
            "{applied}"
        );
        assert_eq!(
            k.ok(&[
                "get",
                "pod",
                "web",
                "-n",
                "smoke",
                "-o",
                "jsonpath={.spec.containers[0].image} {.spec.containers[0].name}"
            ]),
            "nginx:1.28 c"
        );
        assert_eq!(
            k.ok(&[
                "get",
                "configmap",
                "cfg",
                "-n",
                "smoke",
                "-o",
                "jsonpath={.data.a}"
            ]),
            "2"
        );
        assert!(k
            .ok(&["label", "pod", "web", "-n", "smoke", "tier=front"])
            .contains("pod/web labeled"));
        assert!(k
            .ok(&["annotate", "pod", "web", "-n", "smoke", "note=hi"])
            .contains("pod/web annotated"));
        k.ok(&[
            "patch",
            "pod",
            "web",
            "-n",
            "smoke",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
        ]);
        k.ok(&[
            "patch",
            "pod",
            "web",
            "-n",
            "smoke",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/metadata/labels/x","value":"z"}]"#,
        ]);
        assert_eq!(
            k.ok(&[
                "get",
                "pods",
                "-n",
                "smoke",
                "-l",
                "tier=front,x=z",
                "-o",
                "jsonpath={.items[*].metadata.annotations.note}"
            ]),
            "hi"
        );
        workloads(&k);
        // What `get -w` printed meanwhile: the header, then the pod's rows.
        let _ = watcher.kill();
        let watched = watcher.wait_with_output().expect("watch output");
        let watched = String::from_utf8_lossy(&watched.stdout).into_owned();
        println!("(kubectl get pods -n smoke -w printed:)\n{watched}");
        assert!(watched.starts_with("NAME"), "{watched}");
        assert!(
            watched.lines().filter(|l| l.starts_with("web ")).count() >= 3,
            "{watched}"
        );
        let dup = k.run(&["create", "-f", "smoke.yaml"]);
        assert_eq!(dup.code, 1);
        assert!(dup.stderr.contains("AlreadyExists"), "{}", dup.stderr);
        let deleted = k.ok(&["delete", "-f", "smoke2.yaml"]);
        assert!(
            deleted.contains("configmap \"cfg\" deleted")
                && deleted.contains("pod \"web\" deleted"),
            "{deleted}"
        );
        assert_eq!(
            k.ok(&["get", "pods", "-n", "smoke", "-o", "name"]).trim(),
            ""
        );
        // The namespace goes Terminating; emptying and removing it is the
        // namespace controller's (controllers/tests/controllers/namespaces.rs), which
        // does not run here: kubectl is not made to wait for it.
        assert!(k
            .ok(&["delete", "namespace", "smoke", "--wait=false"])
            .contains("namespace \"smoke\" deleted"));
        assert_eq!(
            k.ok(&["get", "namespace", "smoke", "-o", "jsonpath={.status.phase}"]),
            "Terminating"
        );
    })
    .await
    .expect("kubectl transcript");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_smoke_on_etcd() {
    smoke(ClusterKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_smoke_on_ballast() {
    smoke(ClusterKind::Ballast).await;
}
