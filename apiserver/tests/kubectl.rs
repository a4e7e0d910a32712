//! The real kubectl against an apiserver on a real etcd 3.4 cluster and on
//! a Ballast cluster. Prints the transcript; asserts exit codes and output.

mod common;

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
    tokio::task::spawn_blocking(move || {
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
        assert!(k
            .ok(&["delete", "namespace", "smoke"])
            .contains("namespace \"smoke\" deleted"));
        let gone = k.run(&["get", "namespace", "smoke"]);
        assert_eq!(gone.code, 1);
        assert!(gone.stderr.contains("NotFound"), "{}", gone.stderr);
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
