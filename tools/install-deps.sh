#!/bin/sh
# Installs the Debian packages mpx needs that are not installed yet.
# Silent when nothing is missing; needs root (or sudo) only when something is.
# Packages named as arguments are added to the list (tools/bench/run passes
# gnuplot-nox for its plots).
set -e

pkgs="build-essential cmake pkg-config libuv1-dev liburing-dev libcunit1-dev \
libyaml-dev libmsgpack-dev libjansson-dev libssl-dev libxxhash-dev python3 clang libclang-rt-14-dev \
graphviz $*"

missing=""
for p in $pkgs; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

echo "install-deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists; refresh them once, quietly.
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
