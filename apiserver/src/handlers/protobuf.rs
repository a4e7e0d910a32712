//! Kubernetes' protobuf encoding of request bodies
//! (`application/vnd.kubernetes.protobuf`), read into the JSON form every
//! other handler works on. Typed clients send it: kubectl's `create
//! deployment|service|namespace|configmap|role|…` and `run`. Responses are
//! always JSON, which every client also accepts.
//!
//! # Layout
//! - The envelope: `k8s\0` + `runtime.Unknown { 1: TypeMeta { 1: apiVersion,
//!   2: kind }, 2: raw }`, where `raw` is the object's own message.
//! - One generic decoder ([`message`]) walks a message with a compact static
//!   schema ([`Msg`]: field number → JSON name, [`Ty`] and [`Card`]). The
//!   field numbers are those of Kubernetes' `generated.proto` files
//!   (`k8s.io/api/{core,apps,batch,coordination,rbac}/v1`,
//!   `apimachinery/pkg/apis/meta/v1`, `util/intstr`, `api/resource`).
//! - The schemas, one `static` per message, grouped by API package.
//!
//! # Worked example
//! Go's marshaller writes every non-pointer field, zero or not, and pointer
//! fields only when set; JSON leaves out zero `omitempty` fields. So a
//! field the schema marks [`Card::Opt`] is dropped when zero (`name: ""`,
//! `minReadySeconds: 0`, `resources: {}`), while a [`Card::Ptr`] field is
//! kept as sent (`replicas: 0`, `emptyDir: {}`). A field the schema does
//! not know is skipped when it holds only zeros (the always-written empty
//! `status`), and is a 415 otherwise: the client can send JSON instead,
//! and nothing it sent is silently dropped.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Decodes an enveloped Namespace, ConfigMap, Pod, Service, Deployment,
/// ReplicaSet, Job, Lease or RBAC object into its JSON form: 400 for a
/// malformed body, 415 for another kind or for a field this decoder does
/// not know that holds data.
pub fn decode(body: &[u8]) -> Result<Value> {
    let inner = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| Error::BadRequest("protobuf body without the k8s envelope".into()))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (field, v) in fields(inner)? {
        match (field, v) {
            (1, Wire::Bytes(tm)) => {
                for (f, v) in fields(tm)? {
                    match (f, v) {
                        (1, Wire::Bytes(s)) => api_version = utf8(s)?,
                        (2, Wire::Bytes(s)) => kind = utf8(s)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let schema = KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, m)| *m)
        .ok_or_else(|| unsupported(&format!("{api_version} {kind}")))?;
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    obj.extend(message(schema, raw)?);
    Ok(Value::Object(obj))
}

/// The kinds whose protobuf bodies are read: (apiVersion, kind, message).
static KINDS: &[(&str, &str, &Msg)] = &[
    ("v1", "Namespace", &NAMESPACE),
    ("v1", "ConfigMap", &CONFIG_MAP),
    ("v1", "Secret", &SECRET),
    ("v1", "ServiceAccount", &SERVICE_ACCOUNT),
    ("authentication.k8s.io/v1", "TokenRequest", &TOKEN_REQUEST),
    ("v1", "Pod", &POD),
    ("v1", "Service", &SERVICE),
    ("apps/v1", "Deployment", &DEPLOYMENT),
    ("apps/v1", "ReplicaSet", &REPLICA_SET),
    ("batch/v1", "Job", &JOB),
    ("batch/v1", "CronJob", &CRON_JOB),
    ("coordination.k8s.io/v1", "Lease", &LEASE),
    ("policy/v1", "PodDisruptionBudget", &POD_DISRUPTION_BUDGET),
    ("policy/v1", "Eviction", &EVICTION),
    ("policy/v1beta1", "Eviction", &EVICTION),
    ("rbac.authorization.k8s.io/v1", "Role", &ROLE),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", &CLUSTER_ROLE),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", &ROLE_BINDING),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        &ROLE_BINDING,
    ),
];

// ---------------------------------------------------------------- schema

/// A field's value type.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    /// int32 or int64: a varint, negative numbers sign-extended to 64 bits.
    Int,
    Bool,
    /// Raw bytes; base64 in JSON, as Kubernetes writes `[]byte`.
    Bytes,
    /// meta/v1 Time `{1: seconds, 2: nanos}` → RFC 3339, whole seconds.
    Time,
    /// meta/v1 MicroTime: as Time, with six fraction digits.
    MicroTime,
    /// resource.Quantity `{1: string}` → the string.
    Quantity,
    /// intstr.IntOrString `{1: type, 2: intVal, 3: strVal}` → number or string.
    IntOrStr,
    Msg(&'static Msg),
    /// `map<string, V>`: repeated entries `{1: key, 2: value}`.
    Map(&'static Ty),
}

/// How a field occurs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Card {
    /// A Go value field: left out of the JSON when zero or empty.
    Opt,
    /// A Go pointer field: kept whenever it was sent, zero or not.
    Ptr,
    /// Repeated: left out when it has no elements.
    Rep,
    /// Repeated and required: `[]` when it has no elements.
    RepAlways,
    /// An embedded Go struct: its fields are the parent's in JSON.
    Inline,
    /// Read past and left out of the JSON, whatever it holds.
    Ignored,
}

/// One field of a message.
struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    card: Card,
}

/// One message: its proto name (for errors) and fields.
struct Msg {
    name: &'static str,
    fields: &'static [Field],
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        card: Card::Opt,
    }
}

const fn ptr(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        card: Card::Ptr,
    }
}

const fn rep(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        card: Card::Rep,
    }
}

const fn rep_always(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        card: Card::RepAlways,
    }
}

/// A field the apiserver ignores in request bodies.
const fn ignored(num: u64, name: &'static str) -> Field {
    Field {
        num,
        name,
        ty: Ty::Bytes,
        card: Card::Ignored,
    }
}

const fn inline(num: u64, m: &'static Msg) -> Field {
    Field {
        num,
        name: "",
        ty: Ty::Msg(m),
        card: Card::Inline,
    }
}

const S: Ty = Ty::Str;
const I: Ty = Ty::Int;
const B: Ty = Ty::Bool;
const IOS: Ty = Ty::IntOrStr;
const STRINGS: Ty = Ty::Map(&Ty::Str);
const QUANTITIES: Ty = Ty::Map(&Ty::Quantity);

const fn m(msg: &'static Msg) -> Ty {
    Ty::Msg(msg)
}

// meta/v1

static OBJECT_META: Msg = Msg {
    name: "ObjectMeta",
    fields: &[
        f(1, "name", S),
        f(2, "generateName", S),
        f(3, "namespace", S),
        f(4, "selfLink", S),
        f(5, "uid", S),
        f(6, "resourceVersion", S),
        f(7, "generation", I),
        f(8, "creationTimestamp", Ty::Time),
        ptr(9, "deletionTimestamp", Ty::Time),
        ptr(10, "deletionGracePeriodSeconds", I),
        f(11, "labels", STRINGS),
        f(12, "annotations", STRINGS),
        rep(13, "ownerReferences", m(&OWNER_REFERENCE)),
        rep(14, "finalizers", S),
        // Typed clients send back the managedFields they read; a write
        // keeps the stored ones when the body carries none.
        ignored(17, "managedFields"),
    ],
};

static OWNER_REFERENCE: Msg = Msg {
    name: "OwnerReference",
    fields: &[
        f(5, "apiVersion", S),
        f(1, "kind", S),
        f(3, "name", S),
        f(4, "uid", S),
        ptr(6, "controller", B),
        ptr(7, "blockOwnerDeletion", B),
    ],
};

static LABEL_SELECTOR: Msg = Msg {
    name: "LabelSelector",
    fields: &[
        f(1, "matchLabels", STRINGS),
        rep(2, "matchExpressions", m(&LABEL_SELECTOR_REQUIREMENT)),
    ],
};

static LABEL_SELECTOR_REQUIREMENT: Msg = Msg {
    name: "LabelSelectorRequirement",
    fields: &[f(1, "key", S), f(2, "operator", S), rep(3, "values", S)],
};

// core/v1: namespaces, config maps, services

static NAMESPACE: Msg = Msg {
    name: "Namespace",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        f(2, "spec", m(&NAMESPACE_SPEC)),
    ],
};

static NAMESPACE_SPEC: Msg = Msg {
    name: "NamespaceSpec",
    fields: &[rep(1, "finalizers", S)],
};

static CONFIG_MAP: Msg = Msg {
    name: "ConfigMap",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        ptr(4, "immutable", B),
        f(2, "data", STRINGS),
        f(3, "binaryData", Ty::Map(&Ty::Bytes)),
    ],
};

static SECRET: Msg = Msg {
    name: "Secret",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        ptr(5, "immutable", B),
        f(2, "data", Ty::Map(&Ty::Bytes)),
        f(4, "stringData", STRINGS),
        f(3, "type", S),
    ],
};

static SERVICE_ACCOUNT: Msg = Msg {
    name: "ServiceAccount",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        rep(2, "secrets", m(&OBJECT_REFERENCE)),
        rep(3, "imagePullSecrets", m(&LOCAL_OBJECT_REFERENCE)),
        ptr(4, "automountServiceAccountToken", B),
    ],
};

// authentication/v1

static TOKEN_REQUEST: Msg = Msg {
    name: "TokenRequest",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        f(2, "spec", m(&TOKEN_REQUEST_SPEC)),
        f(3, "status", m(&TOKEN_REQUEST_STATUS)),
    ],
};

static TOKEN_REQUEST_SPEC: Msg = Msg {
    name: "TokenRequestSpec",
    fields: &[
        rep_always(1, "audiences", S),
        ptr(4, "expirationSeconds", I),
        ptr(3, "boundObjectRef", m(&BOUND_OBJECT_REFERENCE)),
    ],
};

static BOUND_OBJECT_REFERENCE: Msg = Msg {
    name: "BoundObjectReference",
    fields: &[
        f(1, "kind", S),
        f(2, "apiVersion", S),
        f(3, "name", S),
        f(4, "uid", S),
    ],
};

static TOKEN_REQUEST_STATUS: Msg = Msg {
    name: "TokenRequestStatus",
    fields: &[f(1, "token", S), f(2, "expirationTimestamp", Ty::Time)],
};

static OBJECT_REFERENCE: Msg = Msg {
    name: "ObjectReference",
    fields: &[
        f(1, "kind", S),
        f(2, "namespace", S),
        f(3, "name", S),
        f(4, "uid", S),
        f(5, "apiVersion", S),
        f(6, "resourceVersion", S),
        f(7, "fieldPath", S),
    ],
};

static SERVICE: Msg = Msg {
    name: "Service",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        f(2, "spec", m(&SERVICE_SPEC)),
    ],
};

static SERVICE_SPEC: Msg = Msg {
    name: "ServiceSpec",
    fields: &[
        rep(1, "ports", m(&SERVICE_PORT)),
        f(2, "selector", STRINGS),
        f(3, "clusterIP", S),
        rep(18, "clusterIPs", S),
        f(4, "type", S),
        rep(5, "externalIPs", S),
        f(7, "sessionAffinity", S),
        f(8, "loadBalancerIP", S),
        rep(9, "loadBalancerSourceRanges", S),
        f(10, "externalName", S),
        f(11, "externalTrafficPolicy", S),
        f(12, "healthCheckNodePort", I),
        f(13, "publishNotReadyAddresses", B),
        ptr(14, "sessionAffinityConfig", m(&SESSION_AFFINITY_CONFIG)),
        rep(19, "ipFamilies", S),
        ptr(17, "ipFamilyPolicy", S),
        ptr(20, "allocateLoadBalancerNodePorts", B),
        ptr(21, "loadBalancerClass", S),
        ptr(22, "internalTrafficPolicy", S),
        ptr(23, "trafficDistribution", S),
    ],
};

static SERVICE_PORT: Msg = Msg {
    name: "ServicePort",
    fields: &[
        f(1, "name", S),
        f(2, "protocol", S),
        ptr(6, "appProtocol", S),
        f(3, "port", I),
        f(4, "targetPort", IOS),
        f(5, "nodePort", I),
    ],
};

static SESSION_AFFINITY_CONFIG: Msg = Msg {
    name: "SessionAffinityConfig",
    fields: &[ptr(1, "clientIP", m(&CLIENT_IP_CONFIG))],
};

static CLIENT_IP_CONFIG: Msg = Msg {
    name: "ClientIPConfig",
    fields: &[ptr(1, "timeoutSeconds", I)],
};

// core/v1: pods

static POD: Msg = Msg {
    name: "Pod",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        f(2, "spec", m(&POD_SPEC)),
    ],
};

static POD_TEMPLATE_SPEC: Msg = Msg {
    name: "PodTemplateSpec",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        f(2, "spec", m(&POD_SPEC)),
    ],
};

static POD_SPEC: Msg = Msg {
    name: "PodSpec",
    fields: &[
        rep(1, "volumes", m(&VOLUME)),
        rep(20, "initContainers", m(&CONTAINER)),
        rep(2, "containers", m(&CONTAINER)),
        f(3, "restartPolicy", S),
        ptr(4, "terminationGracePeriodSeconds", I),
        ptr(5, "activeDeadlineSeconds", I),
        f(6, "dnsPolicy", S),
        f(7, "nodeSelector", STRINGS),
        f(8, "serviceAccountName", S),
        f(9, "serviceAccount", S),
        ptr(21, "automountServiceAccountToken", B),
        f(10, "nodeName", S),
        f(11, "hostNetwork", B),
        f(12, "hostPID", B),
        f(13, "hostIPC", B),
        ptr(27, "shareProcessNamespace", B),
        ptr(14, "securityContext", m(&POD_SECURITY_CONTEXT)),
        rep(15, "imagePullSecrets", m(&LOCAL_OBJECT_REFERENCE)),
        f(16, "hostname", S),
        f(17, "subdomain", S),
        ptr(18, "affinity", m(&AFFINITY)),
        f(19, "schedulerName", S),
        rep(22, "tolerations", m(&TOLERATION)),
        rep(23, "hostAliases", m(&HOST_ALIAS)),
        f(24, "priorityClassName", S),
        ptr(25, "priority", I),
        ptr(26, "dnsConfig", m(&POD_DNS_CONFIG)),
        rep(28, "readinessGates", m(&POD_READINESS_GATE)),
        ptr(29, "runtimeClassName", S),
        ptr(30, "enableServiceLinks", B),
        ptr(31, "preemptionPolicy", S),
        f(32, "overhead", QUANTITIES),
        rep(
            33,
            "topologySpreadConstraints",
            m(&TOPOLOGY_SPREAD_CONSTRAINT),
        ),
        ptr(35, "setHostnameAsFQDN", B),
        ptr(36, "os", m(&POD_OS)),
        ptr(37, "hostUsers", B),
        rep(38, "schedulingGates", m(&POD_SCHEDULING_GATE)),
    ],
};

static CONTAINER: Msg = Msg {
    name: "Container",
    fields: &[
        f(1, "name", S),
        f(2, "image", S),
        rep(3, "command", S),
        rep(4, "args", S),
        f(5, "workingDir", S),
        rep(6, "ports", m(&CONTAINER_PORT)),
        rep(19, "envFrom", m(&ENV_FROM_SOURCE)),
        rep(7, "env", m(&ENV_VAR)),
        f(8, "resources", m(&RESOURCE_REQUIREMENTS)),
        rep(23, "resizePolicy", m(&CONTAINER_RESIZE_POLICY)),
        ptr(24, "restartPolicy", S),
        rep(9, "volumeMounts", m(&VOLUME_MOUNT)),
        rep(21, "volumeDevices", m(&VOLUME_DEVICE)),
        ptr(10, "livenessProbe", m(&PROBE)),
        ptr(11, "readinessProbe", m(&PROBE)),
        ptr(22, "startupProbe", m(&PROBE)),
        ptr(12, "lifecycle", m(&LIFECYCLE)),
        f(13, "terminationMessagePath", S),
        f(20, "terminationMessagePolicy", S),
        f(14, "imagePullPolicy", S),
        ptr(15, "securityContext", m(&SECURITY_CONTEXT)),
        f(16, "stdin", B),
        f(17, "stdinOnce", B),
        f(18, "tty", B),
    ],
};

static CONTAINER_PORT: Msg = Msg {
    name: "ContainerPort",
    fields: &[
        f(1, "name", S),
        f(2, "hostPort", I),
        f(3, "containerPort", I),
        f(4, "protocol", S),
        f(5, "hostIP", S),
    ],
};

static CONTAINER_RESIZE_POLICY: Msg = Msg {
    name: "ContainerResizePolicy",
    fields: &[f(1, "resourceName", S), f(2, "restartPolicy", S)],
};

static ENV_VAR: Msg = Msg {
    name: "EnvVar",
    fields: &[
        f(1, "name", S),
        f(2, "value", S),
        ptr(3, "valueFrom", m(&ENV_VAR_SOURCE)),
    ],
};

static ENV_VAR_SOURCE: Msg = Msg {
    name: "EnvVarSource",
    fields: &[
        ptr(1, "fieldRef", m(&OBJECT_FIELD_SELECTOR)),
        ptr(2, "resourceFieldRef", m(&RESOURCE_FIELD_SELECTOR)),
        ptr(3, "configMapKeyRef", m(&KEY_SELECTOR)),
        ptr(4, "secretKeyRef", m(&KEY_SELECTOR)),
    ],
};

static OBJECT_FIELD_SELECTOR: Msg = Msg {
    name: "ObjectFieldSelector",
    fields: &[f(1, "apiVersion", S), f(2, "fieldPath", S)],
};

static RESOURCE_FIELD_SELECTOR: Msg = Msg {
    name: "ResourceFieldSelector",
    fields: &[
        f(1, "containerName", S),
        f(2, "resource", S),
        f(3, "divisor", Ty::Quantity),
    ],
};

/// ConfigMapKeySelector and SecretKeySelector (the same fields).
static KEY_SELECTOR: Msg = Msg {
    name: "KeySelector",
    fields: &[
        inline(1, &LOCAL_OBJECT_REFERENCE),
        f(2, "key", S),
        ptr(3, "optional", B),
    ],
};

static ENV_FROM_SOURCE: Msg = Msg {
    name: "EnvFromSource",
    fields: &[
        f(1, "prefix", S),
        ptr(2, "configMapRef", m(&ENV_SOURCE)),
        ptr(3, "secretRef", m(&ENV_SOURCE)),
    ],
};

/// ConfigMapEnvSource and SecretEnvSource (the same fields).
static ENV_SOURCE: Msg = Msg {
    name: "EnvSource",
    fields: &[inline(1, &LOCAL_OBJECT_REFERENCE), ptr(2, "optional", B)],
};

static LOCAL_OBJECT_REFERENCE: Msg = Msg {
    name: "LocalObjectReference",
    fields: &[f(1, "name", S)],
};

static RESOURCE_REQUIREMENTS: Msg = Msg {
    name: "ResourceRequirements",
    fields: &[
        f(1, "limits", QUANTITIES),
        f(2, "requests", QUANTITIES),
        rep(3, "claims", m(&RESOURCE_CLAIM)),
    ],
};

static RESOURCE_CLAIM: Msg = Msg {
    name: "ResourceClaim",
    fields: &[f(1, "name", S), f(2, "request", S)],
};

static VOLUME_MOUNT: Msg = Msg {
    name: "VolumeMount",
    fields: &[
        f(1, "name", S),
        f(2, "readOnly", B),
        ptr(7, "recursiveReadOnly", S),
        f(3, "mountPath", S),
        f(4, "subPath", S),
        ptr(5, "mountPropagation", S),
        f(6, "subPathExpr", S),
    ],
};

static VOLUME_DEVICE: Msg = Msg {
    name: "VolumeDevice",
    fields: &[f(1, "name", S), f(2, "devicePath", S)],
};

static PROBE: Msg = Msg {
    name: "Probe",
    fields: &[
        inline(1, &PROBE_HANDLER),
        f(2, "initialDelaySeconds", I),
        f(3, "timeoutSeconds", I),
        f(4, "periodSeconds", I),
        f(5, "successThreshold", I),
        f(6, "failureThreshold", I),
        ptr(7, "terminationGracePeriodSeconds", I),
    ],
};

static PROBE_HANDLER: Msg = Msg {
    name: "ProbeHandler",
    fields: &[
        ptr(1, "exec", m(&EXEC_ACTION)),
        ptr(2, "httpGet", m(&HTTP_GET_ACTION)),
        ptr(3, "tcpSocket", m(&TCP_SOCKET_ACTION)),
        ptr(4, "grpc", m(&GRPC_ACTION)),
    ],
};

static EXEC_ACTION: Msg = Msg {
    name: "ExecAction",
    fields: &[rep(1, "command", S)],
};

static HTTP_GET_ACTION: Msg = Msg {
    name: "HTTPGetAction",
    fields: &[
        f(1, "path", S),
        f(2, "port", IOS),
        f(3, "host", S),
        f(4, "scheme", S),
        rep(5, "httpHeaders", m(&HTTP_HEADER)),
    ],
};

static HTTP_HEADER: Msg = Msg {
    name: "HTTPHeader",
    fields: &[f(1, "name", S), f(2, "value", S)],
};

static TCP_SOCKET_ACTION: Msg = Msg {
    name: "TCPSocketAction",
    fields: &[f(1, "port", IOS), f(2, "host", S)],
};

static GRPC_ACTION: Msg = Msg {
    name: "GRPCAction",
    fields: &[f(1, "port", I), ptr(2, "service", S)],
};

static LIFECYCLE: Msg = Msg {
    name: "Lifecycle",
    fields: &[
        ptr(1, "postStart", m(&LIFECYCLE_HANDLER)),
        ptr(2, "preStop", m(&LIFECYCLE_HANDLER)),
        ptr(3, "stopSignal", S),
    ],
};

static LIFECYCLE_HANDLER: Msg = Msg {
    name: "LifecycleHandler",
    fields: &[
        ptr(1, "exec", m(&EXEC_ACTION)),
        ptr(2, "httpGet", m(&HTTP_GET_ACTION)),
        ptr(3, "tcpSocket", m(&TCP_SOCKET_ACTION)),
        ptr(4, "sleep", m(&SLEEP_ACTION)),
    ],
};

static SLEEP_ACTION: Msg = Msg {
    name: "SleepAction",
    fields: &[f(1, "seconds", I)],
};

static SECURITY_CONTEXT: Msg = Msg {
    name: "SecurityContext",
    fields: &[
        ptr(1, "capabilities", m(&CAPABILITIES)),
        ptr(2, "privileged", B),
        ptr(3, "seLinuxOptions", m(&SELINUX_OPTIONS)),
        ptr(4, "runAsUser", I),
        ptr(8, "runAsGroup", I),
        ptr(5, "runAsNonRoot", B),
        ptr(6, "readOnlyRootFilesystem", B),
        ptr(7, "allowPrivilegeEscalation", B),
        ptr(9, "procMount", S),
        ptr(11, "seccompProfile", m(&SECCOMP_PROFILE)),
    ],
};

static POD_SECURITY_CONTEXT: Msg = Msg {
    name: "PodSecurityContext",
    fields: &[
        ptr(1, "seLinuxOptions", m(&SELINUX_OPTIONS)),
        ptr(2, "runAsUser", I),
        ptr(6, "runAsGroup", I),
        ptr(3, "runAsNonRoot", B),
        rep(4, "supplementalGroups", I),
        ptr(5, "fsGroup", I),
        rep(7, "sysctls", m(&NAME_VALUE)),
        ptr(9, "fsGroupChangePolicy", S),
        ptr(10, "seccompProfile", m(&SECCOMP_PROFILE)),
    ],
};

static CAPABILITIES: Msg = Msg {
    name: "Capabilities",
    fields: &[rep(1, "add", S), rep(2, "drop", S)],
};

static SELINUX_OPTIONS: Msg = Msg {
    name: "SELinuxOptions",
    fields: &[
        f(1, "user", S),
        f(2, "role", S),
        f(3, "type", S),
        f(4, "level", S),
    ],
};

static SECCOMP_PROFILE: Msg = Msg {
    name: "SeccompProfile",
    fields: &[f(1, "type", S), ptr(2, "localhostProfile", S)],
};

/// Sysctl (both fields plain strings).
static NAME_VALUE: Msg = Msg {
    name: "Sysctl",
    fields: &[f(1, "name", S), f(2, "value", S)],
};

static TOLERATION: Msg = Msg {
    name: "Toleration",
    fields: &[
        f(1, "key", S),
        f(2, "operator", S),
        f(3, "value", S),
        f(4, "effect", S),
        ptr(5, "tolerationSeconds", I),
    ],
};

static HOST_ALIAS: Msg = Msg {
    name: "HostAlias",
    fields: &[f(1, "ip", S), rep(2, "hostnames", S)],
};

static POD_DNS_CONFIG: Msg = Msg {
    name: "PodDNSConfig",
    fields: &[
        rep(1, "nameservers", S),
        rep(2, "searches", S),
        rep(3, "options", m(&POD_DNS_CONFIG_OPTION)),
    ],
};

static POD_DNS_CONFIG_OPTION: Msg = Msg {
    name: "PodDNSConfigOption",
    fields: &[f(1, "name", S), ptr(2, "value", S)],
};

static POD_READINESS_GATE: Msg = Msg {
    name: "PodReadinessGate",
    fields: &[f(1, "conditionType", S)],
};

static POD_OS: Msg = Msg {
    name: "PodOS",
    fields: &[f(1, "name", S)],
};

static POD_SCHEDULING_GATE: Msg = Msg {
    name: "PodSchedulingGate",
    fields: &[f(1, "name", S)],
};

static TOPOLOGY_SPREAD_CONSTRAINT: Msg = Msg {
    name: "TopologySpreadConstraint",
    fields: &[
        f(1, "maxSkew", I),
        f(2, "topologyKey", S),
        f(3, "whenUnsatisfiable", S),
        ptr(4, "labelSelector", m(&LABEL_SELECTOR)),
        ptr(5, "minDomains", I),
        ptr(6, "nodeAffinityPolicy", S),
        ptr(7, "nodeTaintsPolicy", S),
        rep(8, "matchLabelKeys", S),
    ],
};

static AFFINITY: Msg = Msg {
    name: "Affinity",
    fields: &[
        ptr(1, "nodeAffinity", m(&NODE_AFFINITY)),
        ptr(2, "podAffinity", m(&POD_AFFINITY)),
        ptr(3, "podAntiAffinity", m(&POD_AFFINITY)),
    ],
};

static NODE_AFFINITY: Msg = Msg {
    name: "NodeAffinity",
    fields: &[
        ptr(
            1,
            "requiredDuringSchedulingIgnoredDuringExecution",
            m(&NODE_SELECTOR),
        ),
        rep(
            2,
            "preferredDuringSchedulingIgnoredDuringExecution",
            m(&PREFERRED_SCHEDULING_TERM),
        ),
    ],
};

static NODE_SELECTOR: Msg = Msg {
    name: "NodeSelector",
    fields: &[rep(1, "nodeSelectorTerms", m(&NODE_SELECTOR_TERM))],
};

static NODE_SELECTOR_TERM: Msg = Msg {
    name: "NodeSelectorTerm",
    fields: &[
        rep(1, "matchExpressions", m(&NODE_SELECTOR_REQUIREMENT)),
        rep(2, "matchFields", m(&NODE_SELECTOR_REQUIREMENT)),
    ],
};

static NODE_SELECTOR_REQUIREMENT: Msg = Msg {
    name: "NodeSelectorRequirement",
    fields: &[f(1, "key", S), f(2, "operator", S), rep(3, "values", S)],
};

static PREFERRED_SCHEDULING_TERM: Msg = Msg {
    name: "PreferredSchedulingTerm",
    fields: &[
        f(1, "weight", I),
        f(2, "preference", m(&NODE_SELECTOR_TERM)),
    ],
};

/// PodAffinity and PodAntiAffinity (the same fields).
static POD_AFFINITY: Msg = Msg {
    name: "PodAffinity",
    fields: &[
        rep(
            1,
            "requiredDuringSchedulingIgnoredDuringExecution",
            m(&POD_AFFINITY_TERM),
        ),
        rep(
            2,
            "preferredDuringSchedulingIgnoredDuringExecution",
            m(&WEIGHTED_POD_AFFINITY_TERM),
        ),
    ],
};

static POD_AFFINITY_TERM: Msg = Msg {
    name: "PodAffinityTerm",
    fields: &[
        ptr(1, "labelSelector", m(&LABEL_SELECTOR)),
        rep(2, "namespaces", S),
        f(3, "topologyKey", S),
        ptr(4, "namespaceSelector", m(&LABEL_SELECTOR)),
        rep(5, "matchLabelKeys", S),
        rep(6, "mismatchLabelKeys", S),
    ],
};

static WEIGHTED_POD_AFFINITY_TERM: Msg = Msg {
    name: "WeightedPodAffinityTerm",
    fields: &[
        f(1, "weight", I),
        f(2, "podAffinityTerm", m(&POD_AFFINITY_TERM)),
    ],
};

static VOLUME: Msg = Msg {
    name: "Volume",
    fields: &[f(1, "name", S), inline(2, &VOLUME_SOURCE)],
};

static VOLUME_SOURCE: Msg = Msg {
    name: "VolumeSource",
    fields: &[
        ptr(1, "hostPath", m(&HOST_PATH_VOLUME_SOURCE)),
        ptr(2, "emptyDir", m(&EMPTY_DIR_VOLUME_SOURCE)),
        ptr(6, "secret", m(&SECRET_VOLUME_SOURCE)),
        ptr(10, "persistentVolumeClaim", m(&PVC_VOLUME_SOURCE)),
        ptr(19, "configMap", m(&CONFIG_MAP_VOLUME_SOURCE)),
    ],
};

static HOST_PATH_VOLUME_SOURCE: Msg = Msg {
    name: "HostPathVolumeSource",
    fields: &[f(1, "path", S), ptr(2, "type", S)],
};

static EMPTY_DIR_VOLUME_SOURCE: Msg = Msg {
    name: "EmptyDirVolumeSource",
    fields: &[f(1, "medium", S), ptr(2, "sizeLimit", Ty::Quantity)],
};

static SECRET_VOLUME_SOURCE: Msg = Msg {
    name: "SecretVolumeSource",
    fields: &[
        f(1, "secretName", S),
        rep(2, "items", m(&KEY_TO_PATH)),
        ptr(3, "defaultMode", I),
        ptr(4, "optional", B),
    ],
};

static PVC_VOLUME_SOURCE: Msg = Msg {
    name: "PersistentVolumeClaimVolumeSource",
    fields: &[f(1, "claimName", S), f(2, "readOnly", B)],
};

static CONFIG_MAP_VOLUME_SOURCE: Msg = Msg {
    name: "ConfigMapVolumeSource",
    fields: &[
        inline(1, &LOCAL_OBJECT_REFERENCE),
        rep(2, "items", m(&KEY_TO_PATH)),
        ptr(3, "defaultMode", I),
        ptr(4, "optional", B),
    ],
};

static KEY_TO_PATH: Msg = Msg {
    name: "KeyToPath",
    fields: &[f(1, "key", S), f(2, "path", S), ptr(3, "mode", I)],
};

// apps/v1

static DEPLOYMENT: Msg = Msg {
    name: "Deployment",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        f(2, "spec", m(&DEPLOYMENT_SPEC)),
    ],
};

static DEPLOYMENT_SPEC: Msg = Msg {
    name: "DeploymentSpec",
    fields: &[
        ptr(1, "replicas", I),
        ptr(2, "selector", m(&LABEL_SELECTOR)),
        f(3, "template", m(&POD_TEMPLATE_SPEC)),
        f(4, "strategy", m(&DEPLOYMENT_STRATEGY)),
        f(5, "minReadySeconds", I),
        ptr(6, "revisionHistoryLimit", I),
        f(7, "paused", B),
        ptr(9, "progressDeadlineSeconds", I),
    ],
};

static DEPLOYMENT_STRATEGY: Msg = Msg {
    name: "DeploymentStrategy",
    fields: &[
        f(1, "type", S),
        ptr(2, "rollingUpdate", m(&ROLLING_UPDATE_DEPLOYMENT)),
    ],
};

static ROLLING_UPDATE_DEPLOYMENT: Msg = Msg {
    name: "RollingUpdateDeployment",
    fields: &[ptr(1, "maxUnavailable", IOS), ptr(2, "maxSurge", IOS)],
};

static REPLICA_SET: Msg = Msg {
    name: "ReplicaSet",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        f(2, "spec", m(&REPLICA_SET_SPEC)),
    ],
};

static REPLICA_SET_SPEC: Msg = Msg {
    name: "ReplicaSetSpec",
    fields: &[
        ptr(1, "replicas", I),
        f(4, "minReadySeconds", I),
        ptr(2, "selector", m(&LABEL_SELECTOR)),
        f(3, "template", m(&POD_TEMPLATE_SPEC)),
    ],
};

// batch/v1

static JOB: Msg = Msg {
    name: "Job",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        f(2, "spec", m(&JOB_SPEC)),
    ],
};

/// `podFailurePolicy` (11) and `successPolicy` (16) are left out: the
/// apiserver refuses them, and a body carrying one is a 415 here.
static JOB_SPEC: Msg = Msg {
    name: "JobSpec",
    fields: &[
        ptr(1, "parallelism", I),
        ptr(2, "completions", I),
        ptr(3, "activeDeadlineSeconds", I),
        ptr(4, "selector", m(&LABEL_SELECTOR)),
        ptr(5, "manualSelector", B),
        f(6, "template", m(&POD_TEMPLATE_SPEC)),
        ptr(7, "backoffLimit", I),
        ptr(8, "ttlSecondsAfterFinished", I),
        ptr(9, "completionMode", S),
        ptr(10, "suspend", B),
        ptr(12, "backoffLimitPerIndex", I),
        ptr(13, "maxFailedIndexes", I),
        ptr(14, "podReplacementPolicy", S),
        ptr(15, "managedBy", S),
    ],
};

static CRON_JOB: Msg = Msg {
    name: "CronJob",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        f(2, "spec", m(&CRON_JOB_SPEC)),
    ],
};

static CRON_JOB_SPEC: Msg = Msg {
    name: "CronJobSpec",
    fields: &[
        f(1, "schedule", S),
        ptr(8, "timeZone", S),
        ptr(2, "startingDeadlineSeconds", I),
        f(3, "concurrencyPolicy", S),
        ptr(4, "suspend", B),
        f(5, "jobTemplate", m(&JOB_TEMPLATE_SPEC)),
        ptr(6, "successfulJobsHistoryLimit", I),
        ptr(7, "failedJobsHistoryLimit", I),
    ],
};

static JOB_TEMPLATE_SPEC: Msg = Msg {
    name: "JobTemplateSpec",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        f(2, "spec", m(&JOB_SPEC)),
    ],
};

// coordination/v1

static LEASE: Msg = Msg {
    name: "Lease",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        f(2, "spec", m(&LEASE_SPEC)),
    ],
};

static LEASE_SPEC: Msg = Msg {
    name: "LeaseSpec",
    fields: &[
        ptr(1, "holderIdentity", S),
        ptr(2, "leaseDurationSeconds", I),
        ptr(3, "acquireTime", Ty::MicroTime),
        ptr(4, "renewTime", Ty::MicroTime),
        ptr(5, "leaseTransitions", I),
        ptr(6, "strategy", S),
        ptr(7, "preferredHolder", S),
    ],
};

// rbac/v1

static ROLE: Msg = Msg {
    name: "Role",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        rep_always(2, "rules", m(&POLICY_RULE)),
    ],
};

static CLUSTER_ROLE: Msg = Msg {
    name: "ClusterRole",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        rep_always(2, "rules", m(&POLICY_RULE)),
        ptr(3, "aggregationRule", m(&AGGREGATION_RULE)),
    ],
};

static AGGREGATION_RULE: Msg = Msg {
    name: "AggregationRule",
    fields: &[rep(1, "clusterRoleSelectors", m(&LABEL_SELECTOR))],
};

static POLICY_RULE: Msg = Msg {
    name: "PolicyRule",
    fields: &[
        rep_always(1, "verbs", S),
        rep(2, "apiGroups", S),
        rep(3, "resources", S),
        rep(4, "resourceNames", S),
        rep(5, "nonResourceURLs", S),
    ],
};

/// RoleBinding and ClusterRoleBinding (the same fields).
static ROLE_BINDING: Msg = Msg {
    name: "RoleBinding",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        rep(2, "subjects", m(&SUBJECT)),
        f(3, "roleRef", m(&ROLE_REF)),
    ],
};

static SUBJECT: Msg = Msg {
    name: "Subject",
    fields: &[
        f(1, "kind", S),
        f(2, "apiGroup", S),
        f(3, "name", S),
        f(4, "namespace", S),
    ],
};

static ROLE_REF: Msg = Msg {
    name: "RoleRef",
    fields: &[f(1, "apiGroup", S), f(2, "kind", S), f(3, "name", S)],
};

// policy/v1 (the status is the controller's: a client's is all zeros)

static POD_DISRUPTION_BUDGET: Msg = Msg {
    name: "PodDisruptionBudget",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        f(2, "spec", m(&POD_DISRUPTION_BUDGET_SPEC)),
    ],
};

static POD_DISRUPTION_BUDGET_SPEC: Msg = Msg {
    name: "PodDisruptionBudgetSpec",
    fields: &[
        ptr(1, "minAvailable", IOS),
        ptr(2, "selector", m(&LABEL_SELECTOR)),
        ptr(3, "maxUnavailable", IOS),
        ptr(4, "unhealthyPodEvictionPolicy", S),
    ],
};

static EVICTION: Msg = Msg {
    name: "Eviction",
    fields: &[
        f(1, "metadata", m(&OBJECT_META)),
        ptr(2, "deleteOptions", m(&DELETE_OPTIONS)),
    ],
};

static DELETE_OPTIONS: Msg = Msg {
    name: "DeleteOptions",
    fields: &[
        ptr(1, "gracePeriodSeconds", I),
        ptr(2, "preconditions", m(&PRECONDITIONS)),
        ptr(3, "orphanDependents", B),
        ptr(4, "propagationPolicy", S),
        rep(5, "dryRun", S),
        ptr(6, "ignoreStoreReadErrorWithClusterBreakingPotential", B),
    ],
};

static PRECONDITIONS: Msg = Msg {
    name: "Preconditions",
    fields: &[ptr(1, "uid", S), ptr(2, "resourceVersion", S)],
};

// --------------------------------------------------------------- decoder

fn unsupported(what: &str) -> Error {
    Error::UnsupportedMediaType(format!("{MEDIA_TYPE} ({what})"))
}

/// Decodes one message of schema `msg` into its JSON fields.
fn message(msg: &Msg, buf: &[u8]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for (num, wire) in fields(buf)? {
        let Some(field) = msg.fields.iter().find(|fl| fl.num == num) else {
            if deep_zero(&wire, 0) {
                continue;
            }
            return Err(unsupported(&format!(
                "field {num} of {} is not supported here; send JSON",
                msg.name
            )));
        };
        match (field.card, field.ty) {
            (Card::Ignored, _) => {}
            (Card::Inline, Ty::Msg(inner)) => {
                out.extend(message(inner, bytes(&wire)?)?);
            }
            (_, Ty::Map(value_ty)) => {
                let (k, v) = map_entry(value_ty, bytes(&wire)?)?;
                let entry = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = entry {
                    map.insert(k, v);
                }
            }
            (Card::Rep | Card::RepAlways, ty) => {
                let entry = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(list) = entry else {
                    continue;
                };
                match (ty, &wire) {
                    // A packed repeated number: one length-delimited run.
                    (Ty::Int, Wire::Bytes(run)) => {
                        let mut pos = 0;
                        while pos < run.len() {
                            list.push(json!(varint(run, &mut pos)? as i64));
                        }
                    }
                    _ => list.push(value(ty, &wire)?),
                }
            }
            (Card::Ptr, ty) => {
                let v = value(ty, &wire)?;
                if !v.is_null() {
                    out.insert(field.name.into(), v);
                }
            }
            (_, ty) => {
                let v = value(ty, &wire)?;
                if is_zero(&v) {
                    // A later occurrence of the field replaces an earlier one.
                    out.remove(field.name);
                } else {
                    out.insert(field.name.into(), v);
                }
            }
        }
    }
    for field in msg.fields {
        if field.card == Card::RepAlways && !out.contains_key(field.name) {
            out.insert(field.name.into(), Value::Array(Vec::new()));
        }
    }
    Ok(out)
}

/// Whether a JSON value is what Go's `omitempty` leaves out.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Whether an unknown field holds nothing but zeros: a zero number, an
/// empty string or message, or a message of such fields (Go writes every
/// non-pointer field, so an empty `status` arrives as a tree of zeros).
fn deep_zero(w: &Wire<'_>, depth: usize) -> bool {
    match w {
        Wire::Varint(v) | Wire::Fixed(v) => *v == 0,
        Wire::Bytes(b) => {
            b.is_empty()
                || (depth < 16
                    && fields(b).is_ok_and(|fs| fs.iter().all(|(_, w)| deep_zero(w, depth + 1))))
        }
    }
}

fn bytes<'a>(w: &Wire<'a>) -> Result<&'a [u8]> {
    match w {
        Wire::Bytes(b) => Ok(b),
        _ => Err(bad()),
    }
}

fn number(w: &Wire<'_>) -> Result<u64> {
    match w {
        Wire::Varint(v) => Ok(*v),
        _ => Err(bad()),
    }
}

/// One field's value as JSON (`Null` for a zero Time, which JSON writes
/// as `null` and this decoder leaves out).
fn value(ty: Ty, w: &Wire<'_>) -> Result<Value> {
    Ok(match ty {
        Ty::Str => json!(utf8(bytes(w)?)?),
        Ty::Int => json!(number(w)? as i64),
        Ty::Bool => json!(number(w)? != 0),
        Ty::Bytes => json!(base64::engine::general_purpose::STANDARD.encode(bytes(w)?)),
        Ty::Time => time(bytes(w)?, false)?,
        Ty::MicroTime => time(bytes(w)?, true)?,
        Ty::Quantity => {
            let mut s = String::new();
            for (f, v) in fields(bytes(w)?)? {
                if f == 1 {
                    s = utf8(bytes(&v)?)?;
                }
            }
            json!(s)
        }
        Ty::IntOrStr => {
            let (mut kind, mut int, mut string) = (0, 0i64, String::new());
            for (f, v) in fields(bytes(w)?)? {
                match f {
                    1 => kind = number(&v)?,
                    2 => int = number(&v)? as i64,
                    3 => string = utf8(bytes(&v)?)?,
                    _ => {}
                }
            }
            match kind {
                0 => json!(int),
                1 => json!(string),
                _ => return Err(bad()),
            }
        }
        Ty::Msg(inner) => Value::Object(message(inner, bytes(w)?)?),
        Ty::Map(_) => return Err(bad()),
    })
}

/// One `map<string, V>` entry: `{1: key, 2: value}`; a missing value is
/// the type's zero.
fn map_entry(value_ty: &Ty, e: &[u8]) -> Result<(String, Value)> {
    let (mut k, mut v) = (String::new(), None);
    for (f, w) in fields(e)? {
        match f {
            1 => k = utf8(bytes(&w)?)?,
            2 => v = Some(value(*value_ty, &w)?),
            _ => {}
        }
    }
    let v = match v {
        Some(v) => v,
        None => match value_ty {
            Ty::Int => json!(0),
            Ty::Bool => json!(false),
            Ty::Quantity => json!("0"),
            _ => json!(""),
        },
    };
    Ok((k, v))
}

/// meta/v1 Time or MicroTime `{1: seconds, 2: nanos}` as Kubernetes writes
/// it in JSON: `2006-01-02T15:04:05Z`, or `2006-01-02T15:04:05.000000Z`.
/// Go's zero time is an empty message, `Null` here.
fn time(m: &[u8], micro: bool) -> Result<Value> {
    if m.is_empty() {
        return Ok(Value::Null);
    }
    let (mut secs, mut nanos) = (0i64, 0i64);
    for (f, w) in fields(m)? {
        match f {
            1 => secs = number(&w)? as i64,
            2 => nanos = number(&w)? as i64,
            _ => {}
        }
    }
    // Years 1 to 9999, as RFC 3339 allows; nanos within one second.
    const MIN: i64 = -62_135_596_800;
    const MAX: i64 = 253_402_300_799;
    if !(MIN..=MAX).contains(&secs) || !(0..1_000_000_000).contains(&nanos) {
        return Err(Error::BadRequest(format!(
            "protobuf time out of range: {secs}s {nanos}ns"
        )));
    }
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    let clock = format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    Ok(json!(if micro {
        format!("{clock}.{:06}Z", nanos / 1000)
    } else {
        format!("{clock}Z")
    }))
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (the
/// era-based method: 400-year eras of 146097 days).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (y, mo, d)
}

// ------------------------------------------------------------------ wire

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed(u64),
}

fn bad() -> Error {
    Error::BadRequest("malformed protobuf body".into())
}

fn utf8(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| bad())
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(bad)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad())
}

fn fixed(buf: &[u8], pos: &mut usize, n: usize) -> Result<u64> {
    let end = pos
        .checked_add(n)
        .filter(|e| *e <= buf.len())
        .ok_or_else(bad)?;
    let v = buf[*pos..end]
        .iter()
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    *pos = end;
    Ok(v)
}

/// The top-level fields of one message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => Wire::Fixed(fixed(buf, &mut pos, 8)?),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| bad())?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or_else(bad)?;
                let b = &buf[pos..end];
                pos = end;
                Wire::Bytes(b)
            }
            5 => Wire::Fixed(fixed(buf, &mut pos, 4)?),
            _ => return Err(bad()),
        };
        if tag >> 3 == 0 {
            return Err(bad());
        }
        out.push((tag >> 3, wire));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of `v` its kind's typed schema does not know.
    fn unknown(kind: &str, v: &Value) -> Vec<String> {
        super::super::fields::unknown_fields(kind, v)
    }

    fn varint_bytes(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    /// A length-delimited field.
    fn ld(field: u64, b: &[u8]) -> Vec<u8> {
        [
            varint_bytes((field << 3) | 2),
            varint_bytes(b.len() as u64),
            b.to_vec(),
        ]
        .concat()
    }

    /// A string field.
    fn st(field: u64, s: &str) -> Vec<u8> {
        ld(field, s.as_bytes())
    }

    /// A varint field.
    fn vi(field: u64, v: u64) -> Vec<u8> {
        [varint_bytes(field << 3), varint_bytes(v)].concat()
    }

    /// A `map<string, string>` entry.
    fn kv(field: u64, k: &str, v: &str) -> Vec<u8> {
        ld(field, &[st(1, k), st(2, v)].concat())
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [st(1, api_version), st(2, kind)].concat();
        [b"k8s\0".to_vec(), ld(1, &type_meta), ld(2, raw)].concat()
    }

    fn int_or_string_int(v: u64) -> Vec<u8> {
        [vi(1, 0), vi(2, v), st(3, "")].concat()
    }

    fn int_or_string_str(s: &str) -> Vec<u8> {
        [vi(1, 1), vi(2, 0), st(3, s)].concat()
    }

    fn quantity(s: &str) -> Vec<u8> {
        st(1, s)
    }

    /// ObjectMeta as Go writes it: every string field, zero or not, and an
    /// empty creationTimestamp.
    fn meta(name: &str, namespace: &str, labels: &[(&str, &str)]) -> Vec<u8> {
        let mut m = [
            st(1, name),
            st(2, ""),
            st(3, namespace),
            st(4, ""),
            st(5, ""),
            st(6, ""),
            vi(7, 0),
            ld(8, b""),
        ]
        .concat();
        for (k, v) in labels {
            m.extend(kv(11, k, v));
        }
        m
    }

    #[test]
    fn decodes_budgets_and_evictions_as_kubectl_sends_them() {
        // kubectl create pdb web --selector=app=web --min-available=50%:
        // the status is written, all zeros.
        let selector = kv(1, "app", "web");
        let spec = [ld(1, &int_or_string_str("50%")), ld(2, &selector)].concat();
        let status = [vi(1, 0), vi(3, 0), vi(4, 0), vi(5, 0), vi(6, 0)].concat();
        let raw = [ld(1, &meta("web", "", &[])), ld(2, &spec), ld(3, &status)].concat();
        let v = decode(&envelope("policy/v1", "PodDisruptionBudget", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                   "metadata": {"name": "web"},
                   "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}}})
        );
        assert!(unknown("PodDisruptionBudget", &v).is_empty(), "{v}");
        // kubectl drain: an Eviction with a grace period and no dry run.
        let options = [vi(1, 30), st(4, "Background")].concat();
        let raw = [ld(1, &meta("web-0", "default", &[])), ld(2, &options)].concat();
        let v = decode(&envelope("policy/v1", "Eviction", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "policy/v1", "kind": "Eviction",
                   "metadata": {"name": "web-0", "namespace": "default"},
                   "deleteOptions": {"gracePeriodSeconds": 30, "propagationPolicy": "Background"}})
        );
        assert!(unknown("Eviction", &v).is_empty(), "{v}");
    }

    #[test]
    fn decodes_an_enveloped_namespace() {
        let meta = [st(1, "demo"), kv(11, "team", "a")].concat();
        let ns = [ld(1, &meta), ld(2, &st(1, "kubernetes"))].concat();
        let v = decode(&envelope("v1", "Namespace", &ns)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "demo", "labels": {"team": "a"}},
                   "spec": {"finalizers": ["kubernetes"]}})
        );
        assert!(matches!(
            decode(b"k8s\0\x0a\xff"),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(decode(b"{}"), Err(Error::BadRequest(_))));
    }

    #[test]
    fn decodes_config_maps_with_binary_data() {
        let raw = [
            ld(1, &meta("cfg", "ns", &[])),
            kv(2, "a", "1"),
            kv(2, "empty", ""),
            ld(3, &[st(1, "bin"), ld(2, &[0, 1, 255])].concat()),
            vi(4, 1),
        ]
        .concat();
        let v = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cfg", "namespace": "ns"},
                   "data": {"a": "1", "empty": ""},
                   "binaryData": {"bin": "AAH/"},
                   "immutable": true})
        );
    }

    #[test]
    fn decodes_rbac_roles_and_bindings() {
        let rbac = "rbac.authorization.k8s.io/v1";
        let rule = [st(1, "get"), st(1, "list"), st(2, ""), st(3, "pods")].concat();
        let role = [ld(1, &st(1, "reader")), ld(2, &rule)].concat();
        let v = decode(&envelope(rbac, "Role", &role)).unwrap();
        assert_eq!(v["metadata"]["name"], "reader");
        assert_eq!(
            v["rules"],
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}])
        );
        // No rules at all is still a `rules` list.
        let v = decode(&envelope(rbac, "ClusterRole", &ld(1, &st(1, "none")))).unwrap();
        assert_eq!(v["rules"], json!([]));

        let subject = [
            st(1, "User"),
            st(2, "rbac.authorization.k8s.io"),
            st(3, "alice"),
            st(4, ""),
        ]
        .concat();
        let role_ref = [
            st(1, "rbac.authorization.k8s.io"),
            st(2, "Role"),
            st(3, "reader"),
        ]
        .concat();
        let binding = [
            ld(1, &st(1, "alice-reads")),
            ld(2, &subject),
            ld(3, &role_ref),
        ]
        .concat();
        let v = decode(&envelope(rbac, "RoleBinding", &binding)).unwrap();
        assert_eq!(
            v["subjects"],
            json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}])
        );
        assert_eq!(
            v["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"})
        );
        let v = decode(&envelope(rbac, "ClusterRoleBinding", &binding)).unwrap();
        assert_eq!(v["kind"], "ClusterRoleBinding");

        // An aggregated ClusterRole: its selectors, and no rules yet.
        let selector = ld(1, &kv(1, "rbac.example.com/aggregate-to-view", "true"));
        let aggregated = [ld(1, &st(1, "agg")), ld(3, &selector)].concat();
        let v = decode(&envelope(rbac, "ClusterRole", &aggregated)).unwrap();
        assert_eq!(
            v["aggregationRule"],
            json!({"clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/aggregate-to-view": "true"}}]})
        );
        assert_eq!(v["rules"], json!([]));
    }

    /// What `kubectl create deployment web --image=nginx --image=busybox
    /// --replicas=2 --port=80` sends, zero fields included.
    #[test]
    fn decodes_a_deployment_as_kubectl_sends_it() {
        let container = |name: &str, port: Option<u64>| {
            let mut c = [st(1, name), st(2, name), st(5, "")].concat();
            if let Some(p) = port {
                c.extend(ld(
                    6,
                    &[st(1, ""), vi(2, 0), vi(3, p), st(4, ""), st(5, "")].concat(),
                ));
            }
            c.extend(
                [
                    ld(8, b""),
                    st(13, ""),
                    st(14, ""),
                    vi(16, 0),
                    vi(17, 0),
                    vi(18, 0),
                    st(20, ""),
                ]
                .concat(),
            );
            c
        };
        let pod_spec = [
            ld(2, &container("nginx", Some(80))),
            ld(2, &container("busybox", None)),
            st(3, ""),
            st(6, ""),
            st(8, ""),
            st(9, ""),
            st(10, ""),
            vi(11, 0),
            st(16, ""),
            st(19, ""),
        ]
        .concat();
        let template = [ld(1, &meta("", "", &[("app", "web")])), ld(2, &pod_spec)].concat();
        let rolling = [
            ld(1, &int_or_string_int(1)),
            ld(2, &int_or_string_str("25%")),
        ]
        .concat();
        let strategy = [st(1, "RollingUpdate"), ld(2, &rolling)].concat();
        let spec = [
            vi(1, 2),
            ld(2, &kv(1, "app", "web")),
            ld(3, &template),
            ld(4, &strategy),
            vi(5, 0),
            vi(6, 0),
            vi(7, 0),
        ]
        .concat();
        // DeploymentStatus: every number zero, no conditions.
        let status = [vi(1, 0), vi(2, 0), vi(3, 0), vi(4, 0), vi(5, 0)].concat();
        let raw = [
            ld(1, &meta("web", "smoke", &[("app", "web")])),
            ld(2, &spec),
            ld(3, &status),
        ]
        .concat();
        let v = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "smoke", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [
                            {"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]},
                            {"name": "busybox", "image": "busybox"},
                        ]},
                    },
                    "strategy": {"type": "RollingUpdate",
                                 "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}},
                    "revisionHistoryLimit": 0,
                },
            })
        );
        assert!(unknown("Deployment", &v).is_empty(), "{v}");

        // A ReplicaSet shares the template; replicas 0 is kept (a pointer).
        let rs = [
            ld(1, &meta("web-1", "smoke", &[])),
            ld(2, &[vi(1, 0), vi(4, 5), ld(3, &template)].concat()),
        ]
        .concat();
        let v = decode(&envelope("apps/v1", "ReplicaSet", &rs)).unwrap();
        assert_eq!(v["spec"]["replicas"], 0);
        assert_eq!(v["spec"]["minReadySeconds"], 5);
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][1]["name"],
            "busybox"
        );
    }

    #[test]
    fn decodes_a_job_as_kubectl_create_job_sends_it() {
        let container = [
            st(1, "pi"),
            st(2, "busybox"),
            st(3, "sh"),
            st(3, "-c"),
            st(3, "exit 0"),
        ]
        .concat();
        let pod_spec = [ld(2, &container), st(3, "Never")].concat();
        let template = ld(2, &pod_spec);
        // JobStatus as Go writes it: active, succeeded, failed and
        // completedIndexes always, all zero.
        let status = [vi(4, 0), vi(5, 0), vi(6, 0), st(7, "")].concat();
        let raw = [
            ld(1, &meta("pi", "default", &[])),
            ld(2, &[ld(6, &template), vi(7, 0), vi(10, 0)].concat()),
            ld(3, &status),
        ]
        .concat();
        let v = decode(&envelope("batch/v1", "Job", &raw)).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "pi", "namespace": "default"},
                "spec": {
                    "template": {"spec": {"containers": [
                        {"name": "pi", "image": "busybox", "command": ["sh", "-c", "exit 0"]}],
                        "restartPolicy": "Never"}},
                    "backoffLimit": 0,
                    "suspend": false,
                },
            })
        );
        assert!(unknown("Job", &v).is_empty(), "{v}");
        // A pod failure policy is not read: 415, never silently dropped.
        let pfp = [
            ld(1, &meta("pi", "default", &[])),
            ld(2, &ld(11, &ld(1, &st(1, "FailJob")))),
        ]
        .concat();
        assert!(decode(&envelope("batch/v1", "Job", &pfp)).is_err());
    }

    #[test]
    fn decodes_a_pod_with_env_probes_hooks_and_volumes() {
        let field_ref = ld(1, &[st(1, "v1"), st(2, "metadata.name")].concat());
        let cm_ref = ld(3, &[ld(1, &st(1, "cfg")), st(2, "a")].concat());
        let secret_ref = ld(4, &[ld(1, &st(1, "sec")), st(2, "pw"), vi(3, 1)].concat());
        let env = [
            ld(7, &[st(1, "PLAIN"), st(2, "x")].concat()),
            ld(7, &[st(1, "NAME"), st(2, ""), ld(3, &field_ref)].concat()),
            ld(7, &[st(1, "A"), ld(3, &cm_ref)].concat()),
            ld(7, &[st(1, "PW"), ld(3, &secret_ref)].concat()),
        ]
        .concat();
        let resources = [
            ld(1, &[st(1, "memory"), ld(2, &quantity("128Mi"))].concat()),
            ld(2, &[st(1, "cpu"), ld(2, &quantity("100m"))].concat()),
        ]
        .concat();
        let http_get = [
            st(1, "/healthz"),
            ld(2, &int_or_string_str("http")),
            st(4, "HTTP"),
            ld(5, &[st(1, "X-A"), st(2, "b")].concat()),
        ]
        .concat();
        let liveness = [ld(1, &ld(2, &http_get)), vi(2, 3), vi(4, 10), vi(6, 3)].concat();
        let readiness = [
            ld(
                1,
                &ld(3, &[ld(1, &int_or_string_int(8080)), st(2, "")].concat()),
            ),
            vi(3, 1),
        ]
        .concat();
        let startup = [
            ld(1, &ld(1, &[st(1, "cat"), st(1, "/ready")].concat())),
            vi(7, 0),
        ]
        .concat();
        let lifecycle = [ld(1, &ld(1, &st(1, "true"))), ld(2, &ld(4, &vi(1, 5)))].concat();
        let container = [
            st(1, "app"),
            st(2, "busybox:1.36"),
            st(3, "sh"),
            st(3, "-c"),
            st(4, "sleep 1000"),
            st(5, "/work"),
            ld(6, &[st(1, "http"), vi(3, 8080), st(4, "TCP")].concat()),
            env,
            ld(8, &resources),
            ld(9, &[st(1, "data"), vi(2, 1), st(3, "/data")].concat()),
            ld(10, &liveness),
            ld(11, &readiness),
            ld(22, &startup),
            ld(12, &lifecycle),
            st(13, "/dev/termination-log"),
            st(20, "File"),
            st(14, "IfNotPresent"),
            ld(15, &[vi(4, 1000), vi(7, 0)].concat()),
        ]
        .concat();
        let init = [st(1, "init"), st(2, "busybox:1.36"), ld(8, b"")].concat();
        let volumes = [
            ld(1, &[st(1, "data"), ld(2, &ld(2, &st(1, "")))].concat()),
            ld(
                1,
                &[
                    st(1, "cfg"),
                    ld(2, &ld(19, &[ld(1, &st(1, "cfg")), vi(3, 420)].concat())),
                ]
                .concat(),
            ),
        ]
        .concat();
        let toleration = [
            st(1, "node.kubernetes.io/not-ready"),
            st(2, "Exists"),
            st(3, ""),
            st(4, "NoExecute"),
            vi(5, 300),
        ]
        .concat();
        let spec = [
            volumes,
            ld(20, &init),
            ld(2, &container),
            st(3, "Never"),
            vi(4, 0),
            st(6, "ClusterFirst"),
            kv(7, "disk", "ssd"),
            st(10, "node-1"),
            ld(22, &toleration),
        ]
        .concat();
        let raw = [ld(1, &meta("p", "smoke", &[("run", "p")])), ld(2, &spec)].concat();
        let v = decode(&envelope("v1", "Pod", &raw)).unwrap();
        assert_eq!(
            v["spec"],
            json!({
                "volumes": [
                    {"name": "data", "emptyDir": {}},
                    {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}},
                ],
                "initContainers": [{"name": "init", "image": "busybox:1.36"}],
                "containers": [{
                    "name": "app", "image": "busybox:1.36",
                    "command": ["sh", "-c"], "args": ["sleep 1000"], "workingDir": "/work",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [
                        {"name": "PLAIN", "value": "x"},
                        {"name": "NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}},
                        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw", "optional": true}}},
                    ],
                    "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "100m"}},
                    "volumeMounts": [{"name": "data", "readOnly": true, "mountPath": "/data"}],
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP",
                                    "httpHeaders": [{"name": "X-A", "value": "b"}]},
                        "initialDelaySeconds": 3, "periodSeconds": 10, "failureThreshold": 3,
                    },
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1},
                    "startupProbe": {"exec": {"command": ["cat", "/ready"]}, "terminationGracePeriodSeconds": 0},
                    "lifecycle": {"postStart": {"exec": {"command": ["true"]}}, "preStop": {"sleep": {"seconds": 5}}},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                    "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false},
                }],
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
                "dnsPolicy": "ClusterFirst",
                "nodeSelector": {"disk": "ssd"},
                "nodeName": "node-1",
                "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                 "effect": "NoExecute", "tolerationSeconds": 300}],
            })
        );
        assert!(unknown("Pod", &v).is_empty(), "{v}");
    }

    #[test]
    fn decodes_services() {
        let port = [
            st(1, "80-8080"),
            st(2, "TCP"),
            vi(3, 80),
            ld(4, &int_or_string_int(8080)),
            vi(5, 30080),
        ]
        .concat();
        let spec = [
            ld(1, &port),
            kv(2, "app", "web"),
            st(3, ""),
            st(4, "NodePort"),
            st(7, "ClientIP"),
            ld(14, &ld(1, &vi(1, 600))),
            vi(12, 0),
            vi(13, 0),
        ]
        .concat();
        // ServiceStatus: an empty LoadBalancerStatus, written anyway.
        let raw = [
            ld(1, &meta("web", "smoke", &[("app", "web")])),
            ld(2, &spec),
            ld(3, &ld(1, b"")),
        ]
        .concat();
        let v = decode(&envelope("v1", "Service", &raw)).unwrap();
        assert_eq!(
            v["spec"],
            json!({
                "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80,
                           "targetPort": 8080, "nodePort": 30080}],
                "selector": {"app": "web"},
                "type": "NodePort",
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
            })
        );
        assert!(v.get("status").is_none());
        assert!(unknown("Service", &v).is_empty(), "{v}");
    }

    #[test]
    fn decodes_leases_with_micro_times() {
        // 2023-11-14T22:13:20.123456789Z and 2000-02-29 (a leap day).
        let acquire = [vi(1, 1_700_000_000), vi(2, 123_456_789)].concat();
        let renew = vi(1, 951_782_400);
        let spec = [
            st(1, "node-a"),
            vi(2, 40),
            ld(3, &acquire),
            ld(4, &renew),
            vi(5, 0),
        ]
        .concat();
        let created = [vi(1, 0)].concat();
        let meta = [st(1, "node-a"), st(3, "kube-node-lease"), ld(8, &created)].concat();
        let raw = [ld(1, &meta), ld(2, &spec)].concat();
        let v = decode(&envelope("coordination.k8s.io/v1", "Lease", &raw)).unwrap();
        assert_eq!(
            v["spec"],
            json!({"holderIdentity": "node-a", "leaseDurationSeconds": 40,
                   "acquireTime": "2023-11-14T22:13:20.123456Z",
                   "renewTime": "2000-02-29T00:00:00.000000Z",
                   "leaseTransitions": 0})
        );
        assert_eq!(v["metadata"]["creationTimestamp"], "1970-01-01T00:00:00Z");
        assert!(unknown("Lease", &v).is_empty(), "{v}");
    }

    #[test]
    fn owner_references_and_negative_numbers() {
        let owner = [
            st(1, "ReplicaSet"),
            st(3, "web-1"),
            st(4, "u-1"),
            st(5, "apps/v1"),
            vi(6, 1),
            vi(7, 1),
        ]
        .concat();
        let meta = [
            st(1, "p"),
            ld(13, &owner),
            st(14, "example.com/f"),
            kv(12, "note", "hi"),
            // generation -1, sign-extended to ten bytes as proto2 writes it.
            vi(7, u64::MAX),
        ]
        .concat();
        let v = decode(&envelope("v1", "Pod", &ld(1, &meta))).unwrap();
        assert_eq!(
            v["metadata"],
            json!({"name": "p", "generation": -1, "annotations": {"note": "hi"},
                   "finalizers": ["example.com/f"],
                   "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                        "uid": "u-1", "controller": true, "blockOwnerDeletion": true}]})
        );
    }

    #[test]
    fn bad_bodies_are_400_and_unknown_content_415() {
        let is_bad = |r: Result<Value>| matches!(r, Err(Error::BadRequest(_)));
        let pod = envelope(
            "v1",
            "Pod",
            &[
                ld(1, &meta("p", "smoke", &[("a", "b")])),
                ld(2, &ld(2, &[st(1, "c"), st(2, "img")].concat())),
            ]
            .concat(),
        );
        assert!(decode(&pod).is_ok());
        // Cut anywhere: never a panic; cut inside the object, a 400.
        for end in 0..pod.len() {
            let r = decode(&pod[..end]);
            if end > 40 {
                assert!(is_bad(r), "cut at {end}");
            }
        }
        assert!(is_bad(decode(b"")));
        assert!(is_bad(decode(
            b"k8s\0\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
        )));
        assert!(is_bad(decode(b"k8s\0\x07")), "wire type 7");
        assert!(is_bad(decode(b"k8s\0\x00\x00")), "field number 0");
        // A string field sent as a number.
        assert!(is_bad(decode(&envelope("v1", "Pod", &ld(1, &vi(1, 5))))));
        // Not UTF-8.
        assert!(is_bad(decode(&envelope(
            "v1",
            "Pod",
            &ld(1, &ld(1, &[0xff]))
        ))));
        // IntOrString of an unknown type.
        let port = [vi(3, 80), ld(4, &[vi(1, 2), vi(2, 1)].concat())].concat();
        let svc = ld(2, &ld(1, &port));
        assert!(is_bad(decode(&envelope("v1", "Service", &svc))));
        // A time before year 1.
        let lease = ld(2, &ld(3, &vi(1, (-62_135_596_801i64) as u64)));
        assert!(is_bad(decode(&envelope(
            "coordination.k8s.io/v1",
            "Lease",
            &lease
        ))));

        // Kinds and fields this decoder does not know: 415, not dropped.
        let r = decode(&envelope("scheduling.k8s.io/v1", "PriorityClass", b""));
        assert!(
            matches!(&r, Err(Error::UnsupportedMediaType(m)) if m.contains("scheduling.k8s.io/v1 PriorityClass")),
            "{r:?}"
        );
        // Pod status with a phase set.
        let with_status = [ld(1, &st(1, "p")), ld(3, &st(1, "Running"))].concat();
        let r = decode(&envelope("v1", "Pod", &with_status));
        assert!(
            matches!(&r, Err(Error::UnsupportedMediaType(m)) if m.contains("field 3 of Pod")),
            "{r:?}"
        );
        // ObjectMeta.managedFields (17), as typed clients send them back: ignored.
        let managed = ld(1, &[st(1, "p"), ld(17, &st(1, "kubectl"))].concat());
        assert_eq!(
            decode(&envelope("v1", "Pod", &managed)).unwrap(),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})
        );
        // The same fields holding only zeros are skipped.
        let zeros = [
            ld(1, &[st(1, "p"), ld(17, b"")].concat()),
            ld(3, &[st(1, ""), vi(2, 0), ld(3, &vi(1, 0))].concat()),
        ]
        .concat();
        let v = decode(&envelope("v1", "Pod", &zeros)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})
        );
    }
    /// Random byte flips, cuts and insertions in valid bodies of every
    /// kind: each decodes, or fails with 400 or 415; none panics.
    #[test]
    fn mutated_bodies_never_panic() {
        let container = [
            st(1, "c"),
            st(2, "img"),
            ld(6, &vi(3, 80)),
            ld(
                10,
                &[ld(1, &ld(2, &ld(2, &int_or_string_str("http")))), vi(2, 1)].concat(),
            ),
        ]
        .concat();
        let bodies = [
            envelope(
                "apps/v1",
                "Deployment",
                &[
                    ld(1, &meta("d", "ns", &[("app", "d")])),
                    ld(2, &[vi(1, 2), ld(3, &ld(2, &ld(2, &container)))].concat()),
                ]
                .concat(),
            ),
            envelope(
                "v1",
                "Service",
                &ld(
                    2,
                    &ld(1, &[vi(3, 80), ld(4, &int_or_string_int(8080))].concat()),
                ),
            ),
            envelope(
                "coordination.k8s.io/v1",
                "Lease",
                &ld(2, &ld(3, &[vi(1, 1_700_000_000), vi(2, 5)].concat())),
            ),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..30_000 {
            let mut b = bodies[round % bodies.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % b.len();
                match next() % 3 {
                    0 => b[at] ^= 1 << (next() % 8),
                    1 => b.truncate(at.max(4)),
                    _ => b.insert(at, next() as u8),
                }
            }
            match decode(&b) {
                Ok(v) => assert!(v.is_object()),
                Err(Error::BadRequest(_) | Error::UnsupportedMediaType(_)) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}
