#!/usr/bin/env bash
# Mirage's transform vs libvips' vipsthumbnail, per image, on the same files, in the same runs.
#
#   benches/vs_libvips.sh            # 3 rounds x 5 runs, JPEG Q80, widths 300 and 1200 (~5-10 min, 2 cores)
#   ROUNDS=5 RUNS=5 WIDTHS="300" FORMAT=webp benches/vs_libvips.sh
#   THUMBNAIL_BIN=/tmp/thumbnail benches/vs_libvips.sh   # use an already built examples/thumbnail
#
# Per-image marginal cost by the batch method of ../shared/bench/cli-anchors.sh: one process converting
# BATCH (10) copies of a photo minus one process converting 1 copy, divided by BATCH-1. Process start-up
# (vipsthumbnail loads its modules: ~100-150 ms) cancels out; what remains is read + decode + resize +
# encode + write of one image.
#
# Commands compared (all read the same copies, write to a scratch dir):
#   ours           target/release/examples/thumbnail W jpeg f1 f2 ...   (examples/thumbnail.rs: one thread,
#                  mirage::transform::transform with width=W,quality=80, fit scale-down)
#   vips           vipsthumbnail -s Wx> -o DIR/%s.jpg[Q=80,strip] f1 f2 ...   (libvips' default thread pool)
#   vips-1thread   the same with VIPS_CONCURRENCY=1 (same thread budget as ours)
# `>` = only shrink, like our default fit=scale-down (1200 px of the 500 px photo is a re-encode for both).
#
# Fairness on a shared, busy machine: hyperfine runs all runs of one command before the next, so instead
# of one long hyperfine run there are ROUNDS short ones per (photo, width), each with all six commands and
# the order rotated every round; the per-round ratio ours/vips is taken within a round, the table shows
# the median over rounds (and the range). `uptime` load is recorded before every hyperfine run.
# Bounded: fixed --runs, a timeout on every hyperfine, everything local (no network except apt-get when a
# tool is missing).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
RUNS="${RUNS:-5}"
BATCH="${BATCH:-10}"
WIDTHS="${WIDTHS:-300 1200}"
FORMAT="${FORMAT:-jpeg}"
IMAGES="${IMAGES:-photo-500x355 photo-1920x1080 photo-4000x3000}"
FIXTURES="$ROOT/benches/fixtures"
case "$FORMAT" in
  jpeg) EXT=jpg ;;
  webp) EXT=webp ;;
  *) echo "FORMAT must be jpeg or webp" >&2; exit 2 ;;
esac

# --- tools -------------------------------------------------------------------------------------------
missing=()
command -v vipsthumbnail >/dev/null || missing+=(libvips-tools)
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v jq >/dev/null || missing+=(jq)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (apt-get)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- our binary --------------------------------------------------------------------------------------
# THUMBNAIL_BIN=/path/to/thumbnail skips the build (e.g. a copy kept while the tree is being edited).
if [ -n "${THUMBNAIL_BIN:-}" ]; then
  OURS="$THUMBNAIL_BIN"
else
  (cd "$ROOT" && cargo build --release --example thumbnail --quiet)
  OURS="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/thumbnail"
fi
[ -x "$OURS" ] || { echo "missing $OURS" >&2; exit 1; }

W="$(mktemp -d /tmp/mirage-vs-libvips.XXXXXX)"
trap 'rm -rf "$W"' EXIT
DATA="${DATA:-$W/data}"; mkdir -p "$DATA"
ROWS="$W/rows.tsv"; : > "$ROWS"

echo "# vs_libvips: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, vips $(vipsthumbnail --vips-version | awk '{print $2}'), $(hyperfine --version)"
echo "# rounds=$ROUNDS runs=$RUNS (+1 warm-up) batch=$BATCH format=$FORMAT Q80; times are hyperfine medians"

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

for img in $IMAGES; do
  src="$FIXTURES/$img.jpg"
  [ -f "$src" ] || { echo "missing fixture $src" >&2; exit 1; }
  rm -rf "$W/in" "$W/out"; mkdir -p "$W/in" "$W/out"
  for i in $(seq 1 "$BATCH"); do cp "$src" "$W/in/$i.jpg"; done
  many="$(echo "$W"/in/*.jpg)"
  for width in $WIDTHS; do
    vips_out="$W/out/%s.$EXT[Q=80,strip]"
    # name|command; the order is rotated each round.
    cmds=(
      "ours-1|$OURS $width $FORMAT $W/in/1.jpg"
      "ours-$BATCH|$OURS $width $FORMAT $many"
      "vips-1|vipsthumbnail -s ${width}x> -o $vips_out $W/in/1.jpg"
      "vips-$BATCH|vipsthumbnail -s ${width}x> -o $vips_out $many"
      "vips1t-1|env VIPS_CONCURRENCY=1 vipsthumbnail -s ${width}x> -o $vips_out $W/in/1.jpg"
      "vips1t-$BATCH|env VIPS_CONCURRENCY=1 vipsthumbnail -s ${width}x> -o $vips_out $many"
    )
    for round in $(seq 1 "$ROUNDS"); do
      args=()
      n=${#cmds[@]}
      for k in $(seq 0 $((n - 1))); do
        # Rotate by two commands (one tool) per round: each tool goes first in some round.
        entry="${cmds[$(((k + 2 * (round - 1)) % n))]}"
        args+=(-n "${entry%%|*}" "${entry#*|}")
      done
      load="$(cut -d' ' -f1 /proc/loadavg)"
      json="$DATA/$img-w$width-r$round.json"
      timeout 900 hyperfine -N --style none --warmup 1 --runs "$RUNS" --export-json "$json" "${args[@]}" >/dev/null
      # Per tool: marginal wall ms per image (medians) and marginal CPU ms per image (user+sys means).
      for tool in ours vips vips1t; do
        jq -r --arg one "$tool-1" --arg many "$tool-$BATCH" --argjson b "$BATCH" '
          (.results | map({(.command): .}) | add) as $r
          | [ (($r[$many].median - $r[$one].median) / ($b - 1) * 1000),
              ((($r[$many].user + $r[$many].system) - ($r[$one].user + $r[$one].system)) / ($b - 1) * 1000),
              ($r[$one].median * 1000) ] | @tsv' "$json" |
          while IFS=$'\t' read -r per cpu single; do
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$img" "$width" "$round" "$tool" "$per" "$cpu" "$single" "$load" >> "$ROWS"
          done
      done
      echo "# $img w=$width round $round done (load $load)" >&2
    done
  done
done

# --- report ------------------------------------------------------------------------------------------
col() { awk -F'\t' -v i="$1" -v w="$2" -v t="$3" -v c="$4" '$1==i && $2==w && $4==t {print $c}' "$ROWS"; }
ratios() { # per-round ratio of column $5 of tool $3 over tool $4
  awk -F'\t' -v i="$1" -v w="$2" -v a="$3" -v b="$4" -v c="$5" '
    $1==i && $2==w && $4==a {x[$3]=$c} $1==i && $2==w && $4==b {y[$3]=$c}
    END {for (r in x) if (y[r] > 0) printf "%.2f\n", x[r]/y[r]}' "$ROWS"
}
range() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s–%s", lo, hi}'; }
f1() { awk '{printf "%.1f", $1}'; }

echo
echo "Per image, ms (median over $ROUNDS rounds; per-round ratio range in brackets). wall = (batch of $BATCH − batch of 1) / $((BATCH - 1)), hyperfine medians; cpu = the same on user+sys."
echo
echo "| photo | width | ours wall | vips wall | vips 1-thread wall | **ours / vips** | ours / vips 1-thread | ours cpu | vips cpu | ours / vips cpu | single process ours / vips | load (1 min) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for img in $IMAGES; do
  for width in $WIDTHS; do
    ow="$(col "$img" "$width" ours 5 | median | f1)"
    vw="$(col "$img" "$width" vips 5 | median | f1)"
    v1w="$(col "$img" "$width" vips1t 5 | median | f1)"
    oc="$(col "$img" "$width" ours 6 | median | f1)"
    vc="$(col "$img" "$width" vips 6 | median | f1)"
    os="$(col "$img" "$width" ours 7 | median | f1)"
    vs="$(col "$img" "$width" vips 7 | median | f1)"
    r="$(ratios "$img" "$width" ours vips 5 | median | awk '{printf "%.2f", $1}') [$(ratios "$img" "$width" ours vips 5 | range)]"
    r1="$(ratios "$img" "$width" ours vips1t 5 | median | awk '{printf "%.2f", $1}') [$(ratios "$img" "$width" ours vips1t 5 | range)]"
    rc="$(ratios "$img" "$width" ours vips 6 | median | awk '{printf "%.2f", $1}')"
    load="$(col "$img" "$width" ours 8 | paste -sd' ')"
    echo "| ${img#photo-} | $width | $ow | $vw | $v1w | **$r** | $r1 | $oc | $vc | $rc | $os / $vs | $load |"
  done
done
echo
echo "Raw per-round rows (photo, width, round, tool, wall ms/image, cpu ms/image, single-process ms, load):"
sort -k1,1 -k2,2n -k4,4 -k3,3n "$ROWS" | awk -F'\t' '{printf "    %s\n", $0}'
