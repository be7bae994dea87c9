#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each) with
# cargo-fuzz (libFuzzer). Not part of `cargo test`: run it by hand or on a
# schedule. Crashes land in fuzz/artifacts/TARGET/; each one found so far is
# a regression test in the crate it concerns.
#
#   fuzz/run.sh            # 60 s per target
#   SECONDS_PER_TARGET=600 fuzz/run.sh manifest
set -euo pipefail
cd "$(dirname "$0")"
per="${SECONDS_PER_TARGET:-60}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest config protocol host_api)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz needs nightly-only flags (sanitizers); the one stable toolchain
# here accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$per" -rss_limit_mb=4096 -timeout=20
done
