# Shared helpers of scripts/bench-{read,write,export}.sh (sourced, not run).
#
# The build under test and an optional baseline, measured side by side in one run:
#   BIN=/path/bundlefs            the build under test; default: `cargo build --release` here
#   BASELINE_BIN=/path/bundlefs   optional; every bundlefs measurement is then made for both
#                                 binaries, interleaved run by run in ABBA order (this, baseline;
#                                 baseline, this; …: see sides_of_run) and a comparison table
#                                 follows the usual report
#   NOISE_PCT=5                   see "within noise" below
#   SYNTH=/path/synth             the examples/synth fixture writer (read and write benchmarks);
#                                 default: beside BIN (…/release/examples/synth), else built here
# BASELINE_BIN=$BIN is an A/A run: what the comparison reports then is the noise.
#
# Every figure compared is "lower is better" (seconds, kB, bytes) and is the best (minimum) of the
# runs; ratio = this / baseline. The verdict is "within noise" when the two sides' min..max ranges
# over the runs overlap, or when the ratio is within NOISE_PCT % of 1 (the only test left with one
# run, or with a figure taken once per side); otherwise slower/faster (times) or more/less, by how
# much in %.
# shellcheck shell=bash

say() { printf '==> %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.6f\", $* }"; } # arithmetic without bc
now() { date +%s.%N; }

# setup_bins CARGO_ARGS...: sets BIN (built with `cargo build --release CARGO_ARGS` unless given),
# BASELINE_BIN (absolute, or empty), SIDES (this [base]) and SIDE_BIN[side].
declare -A SIDE_BIN=()
SIDES=(this)
setup_bins() {
    if [[ -n ${BIN:-} ]]; then
        [[ -x $BIN ]] || { echo "bench: BIN=$BIN is not an executable" >&2; exit 1; }
        BIN=$(readlink -f "$BIN")
        say "build under test: $BIN (BIN given, not building)"
    else
        say "cargo build --release $*"
        cargo build --release --quiet "$@"
        BIN=$repo/target/release/bundlefs
    fi
    SIDE_BIN[this]=$BIN
    BASELINE_BIN=${BASELINE_BIN:-}
    if [[ -n $BASELINE_BIN ]]; then
        [[ -x $BASELINE_BIN ]] || { echo "bench: BASELINE_BIN=$BASELINE_BIN is not an executable" >&2; exit 1; }
        BASELINE_BIN=$(readlink -f "$BASELINE_BIN")
        say "baseline: $BASELINE_BIN"
        SIDE_BIN[base]=$BASELINE_BIN
        SIDES=(this base)
    fi
}

# sides_of_run N: the sides in the order run N measures them: SIDES on odd runs, reversed on even
# ones. Whichever side runs first after a page-cache drop or the deletion of the last output tree
# pays more (ext4's inode allocator scans recently deleted inodes, `recently_deleted` in a kernel
# profile); with a fixed order that cost always fell on this build (measured 2026-11-30: export
# to exploded 1.3x "slower" in this,base order, 1.3x "faster" in base,this order, same binaries).
sides_of_run() {
    if (($1 % 2 == 0)) && ((${#SIDES[@]} > 1)); then
        printf '%s\n' "${SIDES[1]}" "${SIDES[0]}"
    else
        printf '%s\n' "${SIDES[@]}"
    fi
}

# setup_synth: SYNTH, the examples/synth fixture writer (one for both sides: same fixtures).
setup_synth() {
    if [[ -z ${SYNTH:-} ]]; then
        SYNTH=$(dirname "$BIN")/examples/synth
        if [[ ! -x $SYNTH ]]; then
            say "cargo build --release --example synth (none beside $BIN)"
            cargo build --release --quiet --example synth
            SYNTH=$repo/target/release/examples/synth
        fi
    fi
    [[ -x $SYNTH ]] || { echo "bench: SYNTH=$SYNTH is not an executable" >&2; exit 1; }
}

# Samples of every measure, per side: record MEASURE SIDE VALUE; best_of MEASURE [SIDE] (minimum).
declare -A SAMPLES=()
record() { SAMPLES[$1/$2]+="$3 "; }
best_of() {
    # shellcheck disable=SC2086 # word splitting of the space-separated samples is the point
    printf '%s\n' ${SAMPLES[$1/${2:-this}]:?no samples of $1/${2:-this}} | sort -g | head -1
}

# compare_table TITLE, then compare_row LABEL MEASURE UNIT [SCALE] per measure: this build's best,
# the baseline's (each "best (min..max)" with more than one sample, times SCALE), the ratio this /
# baseline and the verdict. Prints nothing without a baseline.
compare_table() {
    [[ -n $BASELINE_BIN ]] || return 0
    printf '\n%s\n' "$1"
    printf '  this:     %s\n  baseline: %s\n' "$BIN" "$BASELINE_BIN"
    printf '  within noise: min..max ranges over the runs overlap, or |ratio - 1| < %s%%\n' "$NOISE_PCT"
    printf '| %-56s | %-26s | %-26s | %9s | %-18s |\n' "measure" "this build" "baseline" "this/base" "verdict"
    printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..58})" "$(printf -- '-%.0s' {1..28})" \
        "$(printf -- '-%.0s' {1..28})" "-----------" "$(printf -- '-%.0s' {1..20})"
}
compare_row() {
    [[ -n $BASELINE_BIN ]] || return 0
    local label=$1 m=$2 unit=$3 scale=${4:-1}
    awk -v label="$label ($unit)" -v unit="$unit" -v scale="$scale" -v noise="$NOISE_PCT" \
        -v a="${SAMPLES[$m/this]:?no samples of $m/this}" -v b="${SAMPLES[$m/base]:?no samples of $m/base}" '
        function range(s, r,   v, n, i) {
            n = split(s, v, " ")
            r["min"] = r["max"] = v[1] * scale
            for (i = 2; i <= n; i++) {
                if (v[i] * scale < r["min"]) r["min"] = v[i] * scale
                if (v[i] * scale > r["max"]) r["max"] = v[i] * scale
            }
            r["n"] = n
        }
        function cell(r) {
            if (r["n"] == 1) return sprintf(fmt, r["min"])
            return sprintf(fmt " (" fmt ".." fmt ")", r["min"], r["min"], r["max"])
        }
        BEGIN {
            fmt = unit == "s" ? "%.3f" : unit == "ms" ? "%.2f" : "%.0f"
            range(a, A); range(b, B)
            overlap = !(A["max"] < B["min"] || B["max"] < A["min"])
            if (B["min"] == 0) {
                ratio = "n/a"
                verdict = A["min"] == 0 ? "within noise" : "baseline 0"
            } else {
                r = A["min"] / B["min"]; ratio = sprintf("%.3f", r); pct = (r - 1) * 100
                if (overlap || (pct < 0 ? -pct : pct) < noise) verdict = "within noise"
                else if (unit == "s" || unit == "ms") verdict = sprintf("%s (%+.1f%%)", r > 1 ? "slower" : "faster", pct)
                else verdict = sprintf("%s (%+.1f%%)", r > 1 ? "more" : "less", pct)
            }
            printf "| %-56s | %-26s | %-26s | %9s | %-18s |\n", label, cell(A), cell(B), ratio, verdict
        }'
}
NOISE_PCT=${NOISE_PCT:-5}

# The daemon's pid from `bundlefs mount --daemon` output: "pid: N" (current), or a bare number
# (builds before the labelled output), so a baseline binary of either age works.
pid_line() { sed -n -E 's/^(pid: )?([0-9]+)$/\2/p'; }
