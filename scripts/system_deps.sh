#!/usr/bin/env bash
# Installs the Debian packages the workbench uses offline, when they are missing and we are root.
#   dataset-fashion-mnist  Fashion-MNIST (the default dataset)
#   fonts-noto-color-emoji the colour emoji glyphs rendered into the 64x64 colour dataset
#   chromium               headless browser for the app's end-to-end test
set -u
want=()
[ -d /usr/share/datasets/fashion-mnist ] || want+=(dataset-fashion-mnist)
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || want+=(fonts-noto-color-emoji)
[ -x /usr/bin/chromium ] || want+=(chromium)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "note: missing Debian packages ${want[*]}; run: sudo apt-get install ${want[*]}" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${want[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${want[@]}" >/dev/null; } \
  || echo "warning: could not install ${want[*]}" >&2
exit 0
