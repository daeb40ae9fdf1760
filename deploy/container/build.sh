#!/bin/sh
# Builds the runtime image as localhost/rvs:dev (or the tag given) on a
# machine with no access to any image registry: the static binary from this
# checkout (static-build.sh), then only the Containerfile's runtime stage,
# FROM scratch, which pulls nothing.
#   deploy/container/build.sh [TAG]
# Needs Rust and podman (buildah or docker work too: set BUILDER).
set -eu
tag=${1:-localhost/rvs:dev}
builder=${BUILDER:-podman}
here=$(cd "$(dirname "$0")" && pwd)
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
"$here/static-build.sh" "$context/bin"
"$builder" build --build-arg BINARIES=prebuilt -f "$here/Containerfile" -t "$tag" "$context"
"$builder" image inspect --format '{{.Size}}' "$tag" | awk -v t="$tag" '{ printf "%s: %.1f MB\n", t, $1 / 1000000 }'
