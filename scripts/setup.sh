#!/usr/bin/env bash
# Installs what Ballast needs on a Debian machine that has only Rust.
# Idempotent: installs nothing that is already there.
#   libclang-dev       RocksDB's Rust bindings (bindgen)
#   protobuf-compiler  the gRPC code generators (protoc)
#   libprotobuf-dev    protoc's well-known types (google/protobuf/*.proto),
#                      which the etcd-client crate's protos import
#   etcd-server, etcd-client   real etcd and etcdctl for the compatibility tests
#   kubernetes-client  kubectl, only where the machine has none
#   iproute2           `ip netns` and veth links for the chaos suite's test hosts and the kubelet's --pod-namespaces
#   python3-venv       a venv for the official Python `kubernetes` client
#                      ($HOME/.cache/ballast/pyenv), a client nobody here
#                      wrote, used by tests/tests/e2e/jobs.rs
set -euo pipefail

# The pinned client (its 33.x line is Kubernetes 1.33, as k8s-openapi's
# v1_33 feature the apiserver checks schemas with).
PY_KUBERNETES=33.1.0
# The Prometheus text parser the metrics tests read /metrics with.
PY_PROMETHEUS_CLIENT=0.26.0
PYENV="${BALLAST_PYENV:-$HOME/.cache/ballast/pyenv}"

need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# kubectl cp runs tar in the container (the host's); the exec test's tty is `script`'s.
command -v tar >/dev/null 2>&1 || need+=(tar)
command -v script >/dev/null 2>&1 || need+=(bsdutils)
# CronJob time zones are read from the system tz database.
[ -d /usr/share/zoneinfo ] || need+=(tzdata)
if [ ! -x "$PYENV/bin/python" ]; then
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
fi

if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done

# The official Python client in its own venv; reinstalled only when the
# pin changes.
if ! "$PYENV/bin/python" -c "import kubernetes, sys; sys.exit(kubernetes.__version__ != '$PY_KUBERNETES')" >/dev/null 2>&1; then
  echo "setup: installing the Python kubernetes client $PY_KUBERNETES into $PYENV"
  mkdir -p "$(dirname "$PYENV")"
  [ -x "$PYENV/bin/python" ] || python3 -m venv "$PYENV"
  "$PYENV/bin/python" -m pip install -q --disable-pip-version-check "kubernetes==$PY_KUBERNETES"
fi
if ! "$PYENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('prometheus-client') != '$PY_PROMETHEUS_CLIENT')" >/dev/null 2>&1; then
  echo "setup: installing the Python prometheus-client $PY_PROMETHEUS_CLIENT into $PYENV"
  "$PYENV/bin/python" -m pip install -q --disable-pip-version-check "prometheus-client==$PY_PROMETHEUS_CLIENT"
fi
