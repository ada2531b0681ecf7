#!/usr/bin/env bash
# Builds the Debian package: a release binary (no debug info), a man page per command, bash/zsh/
# fish completions (both made by the binary from its own command-line definition), the systemd
# unit and the fstab example, packed by cargo-deb (installed into ~/.cargo/bin when missing).
#
#   scripts/package.sh          → target/debian/bundlefs_VERSION-1_ARCH.deb (path printed last)
#
# Install with `dpkg -i target/debian/bundlefs_*.deb` (needs fuse3).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "==> $*"; }

if ! command -v cargo-deb >/dev/null 2>&1; then
    say "installing cargo-deb (cargo install --locked cargo-deb)"
    cargo install --locked --quiet cargo-deb@^3
fi

say "cargo build --release --locked --bin bundlefs"
start=$(date +%s)
cargo build --release --locked --quiet --bin bundlefs
say "release build took $(( $(date +%s) - start )) s; binary $(stat -c %s target/release/bundlefs) bytes"

out=target/package
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
target/release/bundlefs manpages "$out/man"
gzip -9n "$out"/man/*.1
target/release/bundlefs completions bash > "$out/completions/bundlefs.bash"
target/release/bundlefs completions zsh > "$out/completions/_bundlefs"
target/release/bundlefs completions fish > "$out/completions/bundlefs.fish"

say "cargo deb --no-build"
deb=$(cargo deb --no-build --no-strip --output target/debian/ 2>/dev/null | tail -1)
say "package: $deb ($(stat -c %s "$deb") bytes)"
echo "$deb"
