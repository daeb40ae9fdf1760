#!/bin/sh
# Builds rvs as one fully static binary and puts it, with rvsadm as a link
# to it, in OUTDIR: static-build.sh OUTDIR. Run from anywhere in the
# checkout; used by build.sh on the host and by the Containerfile's builder
# stage, so both images hold the same binary.
#
# The gnu target with crt-static: glibc linked in, no loader, no libraries
# needed at run time. With --target, the flag applies to rvs only, not to
# the build scripts and proc macros that run on the build machine.
set -eu
out=${1:?usage: static-build.sh OUTDIR}
cd "$(dirname "$0")/../.."
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --locked --profile dist --target "$target" -p rvs --bin rvs
mkdir -p "$out"
cp "${CARGO_TARGET_DIR:-target}/$target/dist/rvs" "$out/rvs"
# rvs acts as rvsadm when called by that name.
ln -sf rvs "$out/rvsadm"
