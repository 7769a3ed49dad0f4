#!/usr/bin/env bash
# Fetches the Fluent 3D emoji (npm package @lobehub/fluent-emoji-3d@1.1.0, MIT licence: 3,391 WebP images,
# 256x256 RGBA) with the ordinary npm client into data/cache/fluent-emoji-3d-1.1.0/ (git-ignored), verifies the
# tarball's sha256 and writes SHA256SUMS, the sha256 of every image, which workbench.data.datasets checks on loading.
#   bash scripts/fetch_fluent_emoji.sh [DEST]      (npm is the Debian package npm: sudo apt-get install npm)
# Does nothing when DEST/SHA256SUMS exists; fails (exit 1) with one line naming the problem otherwise.
set -euo pipefail
export LC_ALL=C  # the byte order of file names: SHA256SUMS is the same on every machine
PACKAGE=@lobehub/fluent-emoji-3d@1.1.0
TARBALL=lobehub-fluent-emoji-3d-1.1.0.tgz
TARBALL_SHA256=c1bb7eee7de090205a232518a9ab4adb3df458bfbe8a1f78232991194c8b2e58
IMAGES=3391
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/data/cache/fluent-emoji-3d-1.1.0}
[ -f "$dest/SHA256SUMS" ] && exit 0
command -v npm >/dev/null || { echo "error: npm not found (needed to fetch $PACKAGE). Fix: sudo apt-get install npm, then bash scripts/fetch_fluent_emoji.sh" >&2; exit 1; }
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d "$dest.tmp.XXXXXX")  # beside dest, so the final mv is a rename on one file system
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "$PACKAGE" --silent >/dev/null) \
  || { echo "error: npm pack $PACKAGE failed (no network or no registry?). Fix: rerun bash scripts/fetch_fluent_emoji.sh where the registry (npm config get registry) is reachable" >&2; exit 1; }
got=$(sha256sum "$tmp/$TARBALL" | cut -d' ' -f1)
[ "$got" = "$TARBALL_SHA256" ] \
  || { echo "error: $TARBALL has sha256 $got, expected $TARBALL_SHA256 (a different or damaged package). Fix: npm cache clean --force, then rerun bash scripts/fetch_fluent_emoji.sh" >&2; exit 1; }
tar -xzf "$tmp/$TARBALL" -C "$tmp"
(cd "$tmp/package/assets" && sha256sum -- *.webp >../SHA256SUMS)
count=$(wc -l <"$tmp/package/SHA256SUMS")
[ "$count" -eq "$IMAGES" ] || { echo "error: $TARBALL holds $count images, expected $IMAGES. Fix: rerun bash scripts/fetch_fluent_emoji.sh" >&2; exit 1; }
echo "$TARBALL_SHA256  $TARBALL" >"$tmp/package/TARBALL.sha256"
rm -rf "$dest"
mv "$tmp/package" "$dest"
echo "Fluent 3D emoji: $count images in $dest"
