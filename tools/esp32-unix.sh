#!/usr/bin/env bash
# The virtual ESP32: MicroPython's unix port built 32-bit (-m32) with single-precision floats, as
# an ESP32's, in two builds under build/esp32-unix/:
#   micropython-frozen  the firmware frozen in through firmware/manifest.py (a frozen image's node)
#   micropython-plain   asyncio frozen only, as a stock ESP32 image (the node's .mpy from files)
# Both also freeze the simulated peripherals (simhw*.py): they stand in for what a board has in
# its ROM (machine.Pin, UART, I2C, ADC are C in an ESP32's flash), so they take no more of the
# heap than a board's do. The firmware's manifest never freezes them: a board's image has none.
#
#   tools/esp32-unix.sh            # build what is stale; print the two binaries' paths
#   MICROPY_SRC=~/micropython tools/esp32-unix.sh
#
# MICROPY_SRC: a MicroPython source directory, or a source tarball (micropython/ inside); unset:
# ../shared/micropython/micropython-*-src.tar.gz beside the checkout. A tarball is unpacked once
# into build/esp32-unix/src/. A build is redone only when its inputs change (the source, the
# manifest and the firmware it freezes, this script). Without a source it says why in one line,
# writes the reason to build/esp32-unix/SKIPPED and exits 0: `make test` goes on without it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${ESP32_UNIX_OUT:-$ROOT/build/esp32-unix}
JOBS=${JOBS:-2}
mkdir -p "$OUT"
rm -f "$OUT/SKIPPED"

skip() {
  echo "esp32-unix: 32-bit run skipped: $*" | tee "$OUT/SKIPPED" >&2
  rm -f "$OUT"/micropython-*    # never test a firmware other than this checkout's
  exit 0
}

src=${MICROPY_SRC:-}
if [ -z "$src" ]; then
  src=$(ls "$ROOT"/../shared/micropython/micropython-*-src.tar.gz 2>/dev/null | head -1 || true)
  [ -n "$src" ] || skip "no MicroPython source (set MICROPY_SRC to a checkout or a source tarball; none in ../shared/micropython/)"
fi
[ -e "$src" ] || skip "MICROPY_SRC=$src does not exist"
command -v make >/dev/null && command -v gcc >/dev/null || skip "no gcc/make"
# -m32 needs the 32-bit C library (Debian: gcc-multilib)
echo 'int main(void){return 0;}' | gcc -m32 -x c -o "$OUT/.m32check" - 2>/dev/null \
  || skip "gcc cannot build 32-bit programs (install gcc-multilib)"
rm -f "$OUT/.m32check"

if [ -f "$src" ]; then
  sum=$(sha256sum "$src" | cut -c1-12)
  MPY=$OUT/src/$sum/micropython
  if [ ! -f "$MPY/py/mpconfig.h" ]; then
    rm -rf "$OUT/src" && mkdir -p "$OUT/src/$sum"
    tar -xzf "$src" -C "$OUT/src/$sum" || skip "cannot unpack $src"
  fi
  srcid=tarball:$sum
else
  MPY=$(cd "$src" && pwd)
  srcid=dir:$MPY:$(git -C "$MPY" rev-parse HEAD 2>/dev/null || echo no-git)
fi
[ -f "$MPY/py/mpconfig.h" ] && [ -d "$MPY/ports/unix" ] || skip "$MPY is not a MicroPython source tree"

# The standard variant's manifest asks for micropython-lib; we pass our own manifests, and an
# empty library dir stands in for the submodule.
mkdir -p "$OUT/empty-lib" && echo x > "$OUT/empty-lib/README.md"
# The simulated peripherals: in firmware/ until they move to the host tool's sim package.
simdir=$ROOT/firmware
[ -f "$ROOT/host_tools/citynode/sim/board/simhw.py" ] && simdir=$ROOT/host_tools/citynode/sim/board
sim_modules() {
  for f in "$simdir"/simhw*.py; do echo "module(\"$(basename "$f")\", base_path=\"$simdir\")"; done
}
{ echo "include(\"$ROOT/firmware/manifest.py\")"; sim_modules; } > "$OUT/frozen-manifest.py"
{ echo 'include("$(MPY_DIR)/extmod/asyncio")'; sim_modules; } > "$OUT/plain-manifest.py"

stamp_of() {  # the inputs of one build, hashed
  { echo "$srcid"; cat "$0"; cat "$2"
    cat "$simdir"/simhw*.py
    if [ "$1" = frozen ]; then
      find "$ROOT/firmware" -name '*.py' -not -path '*/__pycache__/*' | sort | xargs sha256sum
    fi; } | sha256sum | cut -c1-16
}

build() {  # build NAME MANIFEST
  local name=$1 manifest=$2 bdir=$OUT/build-$1 stamp
  stamp=$(stamp_of "$1" "$2")
  if [ -x "$OUT/micropython-$name" ] && [ "$(cat "$bdir.stamp" 2>/dev/null)" = "$stamp" ]; then
    return
  fi
  echo "esp32-unix: building the 32-bit unix port ($name) from $MPY" >&2
  make -s -C "$MPY/mpy-cross" -j"$JOBS" BUILD="$OUT/mpy-cross" >"$OUT/build-$name.log" 2>&1 \
    || { tail -20 "$OUT/build-$name.log" >&2; echo "esp32-unix: mpy-cross build failed (log: $OUT/build-$name.log)" >&2; exit 1; }
  make -C "$MPY/ports/unix" -j"$JOBS" VARIANT=standard BUILD="$bdir" \
    MICROPY_MPYCROSS="$OUT/mpy-cross/mpy-cross" \
    CFLAGS_EXTRA="-m32 -DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT" LDFLAGS_EXTRA=-m32 \
    MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 MICROPY_PY_SSL=0 MICROPY_SSL_MBEDTLS=0 \
    MPY_LIB_DIR="$OUT/empty-lib" FROZEN_MANIFEST="$manifest" >>"$OUT/build-$name.log" 2>&1 \
    || { tail -20 "$OUT/build-$name.log" >&2; echo "esp32-unix: build failed (log: $OUT/build-$name.log)" >&2; exit 1; }
  cp "$bdir/micropython" "$OUT/micropython-$name.tmp"
  mv "$OUT/micropython-$name.tmp" "$OUT/micropython-$name"
  echo "$stamp" > "$bdir.stamp"
}

build frozen "$OUT/frozen-manifest.py"
build plain "$OUT/plain-manifest.py"
echo "$OUT/micropython-frozen"
echo "$OUT/micropython-plain"
