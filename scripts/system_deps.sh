#!/usr/bin/env bash
# Installs the data the workbench uses offline, when it is missing: Debian packages when we are root, then the
# Fluent 3D emoji through npm (scripts/fetch_fluent_emoji.sh, into the git-ignored data/cache/).
#   dataset-fashion-mnist  Fashion-MNIST (the default dataset)
#   fonts-noto-color-emoji the colour emoji glyphs rendered into the 64x64 and 128x128 colour datasets
#   chromium               headless browser for the app's end-to-end test
#   npm                    the client that fetches @lobehub/fluent-emoji-3d (the 256x256 dataset)
set -u
here=$(cd "$(dirname "$0")" && pwd)
fluent=$here/../data/cache/fluent-emoji-3d-1.1.0/SHA256SUMS
want=()
[ -d /usr/share/datasets/fashion-mnist ] || want+=(dataset-fashion-mnist)
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || want+=(fonts-noto-color-emoji)
[ -x /usr/bin/chromium ] || want+=(chromium)
[ -f "$fluent" ] || command -v npm >/dev/null || want+=(npm)
if [ ${#want[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "note: missing Debian packages ${want[*]}; run: sudo apt-get install ${want[*]}" >&2
  else
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${want[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${want[@]}" >/dev/null; } \
      || echo "warning: could not install ${want[*]}" >&2
  fi
fi
[ -f "$fluent" ] || bash "$here/fetch_fluent_emoji.sh" || echo "warning: Fluent 3D emoji not fetched (see above); the emoji256 presets need them" >&2
exit 0
