#!/usr/bin/env bash
# Installs what Ballast needs on a Debian machine that has only Rust.
# Idempotent: installs nothing that is already there.
#   libclang-dev       RocksDB's Rust bindings (bindgen)
#   protobuf-compiler  the gRPC code generators (protoc)
#   libprotobuf-dev    protoc's well-known types (google/protobuf/*.proto),
#                      which the etcd-client crate's protos import
#   etcd-server, etcd-client   real etcd and etcdctl for the compatibility tests
#   kubernetes-client  kubectl, only where the machine has none
#   iproute2           `ip netns` and veth links for the chaos suite's test hosts
set -euo pipefail

need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v ip >/dev/null 2>&1 || need+=(iproute2)

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
