#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, where missing: what building needs,
# and the real clients and servers the tests drive. Used by scripts/test.sh and .ci/run.
set -euo pipefail

need=()
# The build: a C compiler and make for jemalloc (the gateway's allocator), protoc for etcd-client.
command -v cc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v redis-server >/dev/null || need+=(redis-server)
command -v python3 >/dev/null || need+=(python3)
command -v promtool >/dev/null || need+=(prometheus)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v git >/dev/null || need+=(git)
# The dashboard tests drive a real headless browser.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

