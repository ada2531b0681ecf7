#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each (default 30), one after the other,
# one job each, and fails if any of them finds a crash, a failed assertion, a leak or a timeout.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs a nightly toolchain (libFuzzer's instrumentation); installs cargo-fuzz when missing.
# The committed seeds (fuzz/corpus/<target>/) are only read: each run grows a scratch copy, so the
# repository stays small. What a run finds is kept in fuzz/artifacts/<target>/ (not committed);
# reproduce it with `cargo +nightly fuzz run <target> <file>`, and minimise with `cargo +nightly
# fuzz tmin <target> <file>`. FUZZ_KEEP=DIR keeps the grown corpora in DIR/<target>/.
set -euo pipefail

cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
say() { printf '== %s\n' "$*" >&2; }

if ! cargo +nightly --version >/dev/null 2>&1; then
    say "installing the nightly toolchain (rustup)"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

say "building fuzz targets: ${targets[*]}"
(cd fuzz && cargo +nightly fuzz build -O)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    work="${FUZZ_KEEP:-$scratch}/$t"
    mkdir -p "$work" "fuzz/artifacts/$t"
    say "fuzzing $t for ${secs}s"
    log="$scratch/$t.log"
    # -rss_limit_mb: a parser that allocates without bound is a bug too; -timeout: so is a hang.
    if (cd fuzz && cargo +nightly fuzz run -O "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) \
        >"$log" 2>&1; then
        # libFuzzer's last lines: "Done N runs in S second(s)" and the stat:: lines.
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
        say "$t: ok, ${runs:-?} executions in ${secs}s, ${cov:-cov: ?}, corpus $(ls "$work" | wc -l) inputs"
    else
        tail -n 60 "$log" >&2
        # CI keeps only the log: print the panic and the input itself, so a finding made on a
        # clean clone can be reproduced from the log alone (base64 -d > file; cargo fuzz run).
        grep -m1 -A4 -e 'panicked at' -e 'ERROR: libFuzzer' "$log" >&2 || true
        input=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
        [[ -z $input || $input = /* ]] || input=fuzz/$input
        if [[ -n $input && -f $input ]]; then
            say "$t: failing input ($(stat -c %s "$input") bytes), base64:"
            base64 -w 0 "$input" >&2
            echo >&2
        fi
        say "$t: FAILED (input in fuzz/artifacts/$t/)"
        failed+=("$t")
    fi
done
if ((${#failed[@]})); then
    say "fuzz targets that failed: ${failed[*]}"
    exit 1
fi
say "all fuzz targets ran ${secs}s each without a finding"
