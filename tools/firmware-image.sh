#!/usr/bin/env bash
# A MicroPython image for a real board with the firmware frozen in (docs/esp32.md):
#   make firmware-image BOARD=ESP32_GENERIC          # or ESP32_GENERIC_S3
# -> build/firmware-image/<BOARD>/firmware.bin, for `citynode flash --firmware`.
#
# Needs ESP-IDF (IDF_PATH, its export.sh sourced: idf.py on PATH; v5.5.2 is what MicroPython
# 1c3c2011 recommends) and a MicroPython checkout with its submodules (MICROPY_SRC; `make -C
# ports/esp32 submodules` fetches them). The image is the port's own manifest (_boot, dht,
# networking, ...) and then firmware/manifest.py, the same manifest the virtual ESP32 freezes.
# What is missing is said in one line, exit 2. FIRMWARE_IMAGE_DRY_RUN=1 prints the build
# command instead of running it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BOARD=${BOARD:-ESP32_GENERIC}
IDF_WANT=5.5.2
OUT=$ROOT/build/firmware-image/$BOARD

missing() {
  echo "firmware-image: not built: $*" >&2
  exit 2
}

case "$BOARD" in
  ESP32_GENERIC|ESP32_GENERIC_S3) ;;
  *) missing "BOARD=$BOARD is not a board this firmware has a profile for (ESP32_GENERIC, ESP32_GENERIC_S3)" ;;
esac
[ -n "${IDF_PATH:-}" ] || missing "ESP-IDF not found: IDF_PATH is unset (install ESP-IDF v$IDF_WANT, then . \$IDF_PATH/export.sh)"
ver=$IDF_PATH/tools/cmake/version.cmake
[ -f "$ver" ] || missing "IDF_PATH=$IDF_PATH is not an ESP-IDF tree (no tools/cmake/version.cmake)"
command -v idf.py >/dev/null || missing "idf.py is not on PATH (run . \$IDF_PATH/export.sh first)"
idf=$(sed -n 's/^set(IDF_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))/\2/p' "$ver" | paste -sd.)
[ "$idf" = "$IDF_WANT" ] || echo "firmware-image: ESP-IDF $idf, not v$IDF_WANT (MicroPython also supports 5.3-5.5)" >&2
MPY=${MICROPY_SRC:-}
[ -n "$MPY" ] && [ -d "$MPY" ] || missing "no MicroPython checkout: set MICROPY_SRC (a git clone of micropython at 1c3c2011)"
MPY=$(cd "$MPY" && pwd)
[ -d "$MPY/ports/esp32" ] || missing "MICROPY_SRC=$MPY has no ports/esp32 (the shared tarball is cut to the unix port)"
[ -f "$MPY/lib/micropython-lib/README.md" ] \
  || missing "MICROPY_SRC=$MPY lacks its submodules (make -C $MPY/ports/esp32 submodules)"

mkdir -p "$OUT"
cat > "$OUT/manifest.py" <<M
include("\$(PORT_DIR)/boards/manifest.py")
include("$ROOT/firmware/manifest.py")
M
cmd=(make -C "$MPY/ports/esp32" BOARD="$BOARD" BUILD="$OUT/build" FROZEN_MANIFEST="$OUT/manifest.py")
if [ -n "${FIRMWARE_IMAGE_DRY_RUN:-}" ]; then
  echo "${cmd[*]}"
  exit 0
fi
make -C "$MPY/mpy-cross"
"${cmd[@]}"
cp "$OUT/build/firmware.bin" "$OUT/firmware.bin"
echo "$OUT/firmware.bin (flash: citynode flash --port PORT --firmware $OUT/firmware.bin)"
