#!/usr/bin/env bash
# Re-creates vendor/ from the npm registry: each tarball is downloaded,
# checked against the sha256 below, and the listed files are copied out
# unchanged. `vendor/fetch.sh --check` only compares with what is committed.
# Needs curl, sha256sum and tar; no Node.
set -euo pipefail
cd "$(dirname "$0")"

check=false
[ "${1:-}" = "--check" ] && check=true

# name  version  tarball sha256  destination  files (relative to package/)
packages=(
  "protobufjs 8.8.1 1e32c0bc7535f2d5e82b56e59b40be340d08a1eeb751db6cb8b8f8db9e5b345a protobufjs dist/protobuf.min.js LICENSE"
  "@noble/ciphers 2.4.0 4a398bcc280c8742d474f9162f6d3c153e52ab1078e8ab592b4720410fb3c3e9 noble-ciphers aes.js _polyval.js utils.js LICENSE"
  "@noble/hashes 2.4.0 e1946149b780017b2564fcc092cb01c04e1d7f20627d0296c17da8868f4436dc noble-hashes legacy.js _md.js _u64.js utils.js LICENSE"
)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for line in "${packages[@]}"; do
  read -r name version sum dest files <<<"$line"
  base=${name##*/}
  url="https://registry.npmjs.org/${name}/-/${base}-${version}.tgz"
  curl -fsSL "$url" -o "$tmp/$base.tgz"
  echo "$sum  $tmp/$base.tgz" | sha256sum -c --quiet -
  mkdir -p "$tmp/$base"
  tar xzf "$tmp/$base.tgz" -C "$tmp/$base"
  for f in $files; do
    src="$tmp/$base/package/$f"
    dst="$dest/$(basename "$f")"
    if $check; then
      cmp -s "$src" "$dst" || { echo "differs: $dst ($name@$version $f)"; status=1; }
    else
      mkdir -p "$dest"
      cp "$src" "$dst"
    fi
  done
  echo "$name@$version: ok"
done
exit $status
