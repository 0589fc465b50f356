#!/usr/bin/env bash
# Fuzzes the URL/options parser and the decode path for a bounded time each. Not run in CI.
#
#   fuzz/run.sh            # 60 s per target
#   FUZZ_SECONDS=600 fuzz/run.sh parse_request
#
# Needs cargo-fuzz (installed here if missing) and a nightly toolchain; without one, the stable toolchain is
# used with RUSTC_BOOTSTRAP=1, which lets it accept the -Z flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(parse_request decode)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

# Seed the decode corpus with the test fixtures (real images mutate into interesting ones much faster).
mkdir -p fuzz/corpus/decode fuzz/corpus/parse_request
for f in tests/fixtures/*.jpg tests/fixtures/*.png tests/fixtures/*.gif tests/fixtures/*.webp; do
    [ -f "$f" ] && cp -n "$f" fuzz/corpus/decode/ 2>/dev/null || true
done
printf 'w=300,h=200,fit=cover,format=webp\nhttps://example.com/a.jpg?x=1\nimage/webp,*/*' > fuzz/corpus/parse_request/seed-1
printf 'width=10,q=50\nhttps%%3A%%2F%%2Fexample.com%%2Fb.png\n' > fuzz/corpus/parse_request/seed-2

# Build once (release + ASan), then run the binaries directly: `cargo fuzz run` may rebuild with other flags.
# (`cargo fuzz build` takes at most one target: build them all.)
cargo "${toolchain[@]}" fuzz build -O
bin="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"
for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "fuzz/artifacts/$target"
    # -rss_limit_mb: a decode that allocates past the limits is a finding, not a machine-wide OOM.
    "$bin/$target" "fuzz/corpus/$target" -artifact_prefix="fuzz/artifacts/$target/" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=262144 -timeout=10
done
