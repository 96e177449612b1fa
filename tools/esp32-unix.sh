#!/usr/bin/env bash
# The virtual ESP32: MicroPython's unix port built 32-bit (-m32) with single-precision floats, as
# an ESP32's, in two builds under build/esp32-unix/:
#   micropython-frozen  the firmware frozen in through firmware/manifest.py (a frozen image's node)
#   micropython-plain   asyncio frozen only, as a stock ESP32 image (the node's .mpy from files)
# Both grow their GC heap as an ESP32's does (MICROPY_GC_SPLIT_HEAP_AUTO), into an emulated
# ESP-IDF heap of CITYNODE_IDF_HEAP bytes (tools/idfheap/; unset: none, the heap never grows).
# Both also freeze the simulated peripherals (simhw*.py): they stand in for what a board has in
# its ROM (machine.Pin, UART, I2C, ADC are C in an ESP32's flash), so they take no more of the
# heap than a board's do. The firmware's manifest never freezes them: a board's image has none.
#
#   tools/esp32-unix.sh              # build what is stale; print the two binaries' paths
#   MICROPY_SRC=~/micropython tools/esp32-unix.sh
#   tools/esp32-unix.sh --print-src  # find (or fetch) the source, print its directory, build nothing
#
# MICROPY_SRC: a MicroPython source directory, or a source tarball (micropython/ inside); unset:
# ../shared/micropython/micropython-*-src.tar.gz beside the checkout; neither: the pinned commit
# (MICROPY_COMMIT) fetched from MICROPY_GIT_URL once into build/esp32-unix/git/COMMIT/ (empty
# MICROPY_GIT_URL: never fetch). The fetch is bounded (MICROPY_FETCH_TIMEOUT, 30 s: for the
# server to answer, and the longest a download may stall) and lands under its final name only
# when complete. A tarball is unpacked once into build/esp32-unix/src/. A build is redone only
# when its inputs change (the source, the manifest and the firmware it freezes, this script).
# Without a source it says why in one line, writes the reason to build/esp32-unix/SKIPPED and
# exits 0: `make test` goes on without it.
set -euo pipefail

mode=build
case ${1:-} in
  "") ;;
  --print-src) mode=print-src ;;
  *) echo "esp32-unix: unknown argument '$1' (usage: tools/esp32-unix.sh [--print-src])" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${ESP32_UNIX_OUT:-$ROOT/build/esp32-unix}
JOBS=${JOBS:-2}
COMMIT=${MICROPY_COMMIT:-1c3c201149f37fe8d81246191b3127bb198d6306}
GIT_URL=${MICROPY_GIT_URL-https://github.com/micropython/micropython}
FETCH_TIMEOUT=${MICROPY_FETCH_TIMEOUT:-30}
[[ $COMMIT =~ ^[0-9a-f]{40}$ ]] || { echo "esp32-unix: MICROPY_COMMIT=$COMMIT is not a full commit hash (40 hex digits)" >&2; exit 2; }
[[ $FETCH_TIMEOUT =~ ^[1-9][0-9]*$ ]] || { echo "esp32-unix: MICROPY_FETCH_TIMEOUT=$FETCH_TIMEOUT is not a number of seconds" >&2; exit 2; }
mkdir -p "$OUT"
rm -f "$OUT/SKIPPED"

skip() {
  echo "esp32-unix: 32-bit run skipped: $*" | tee "$OUT/SKIPPED" >&2
  rm -f "$OUT"/micropython-*    # never test a firmware other than this checkout's
  exit 0
}

toolchain() {
  command -v make >/dev/null && command -v gcc >/dev/null || skip "no gcc/make"
  # -m32 needs the 32-bit C library (Debian: gcc-multilib)
  echo 'int main(void){return 0;}' | gcc -m32 -x c -o "$OUT/.m32check" - 2>/dev/null \
    || skip "gcc cannot build 32-bit programs (install gcc-multilib)"
  rm -f "$OUT/.m32check"
}

# fetch: the pinned commit into $OUT/git/$COMMIT; on failure the reason in $WHY. It is fetched
# into a temporary directory, renamed when checked out and verified, so an interrupted fetch
# never leaves a tree under the name that is later used.
FETCH_TMP= BOUNDED= WHY=
cleanup() {
  [ -z "$BOUNDED" ] || kill -TERM "$BOUNDED" 2>/dev/null || true
  [ -z "$FETCH_TMP" ] || rm -rf "$FETCH_TMP" "$FETCH_TMP.log"
  rmdir "$OUT/git" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bounded() {  # bounded SECONDS CMD...: CMD and its children are stopped after SECONDS, or on ^C
  local t=$1 rc=0
  shift
  timeout -k 5 "$t" "$@" &     # in the background so that ^C is not held until it returns
  BOUNDED=$!
  wait "$BOUNDED" || rc=$?
  BOUNDED=
  return $rc
}
fetch() {
  local err got
  [ -n "$GIT_URL" ] || { WHY="fetching is off (MICROPY_GIT_URL is empty)"; return 1; }
  [ "$mode" = print-src ] || toolchain       # no download for a machine that cannot build
  WHY="fetching ${COMMIT:0:8} from $GIT_URL failed: "
  command -v git >/dev/null || { WHY+="no git"; return 1; }
  mkdir -p "$OUT/git"
  rm -rf "$OUT/git"/.fetch-*            # left by a fetch that was killed
  FETCH_TMP=$(mktemp -d "$OUT/git/.fetch-XXXXXX")
  err=$FETCH_TMP.log
  : >"$err"
  if [ -t 2 ]; then echo "esp32-unix: fetching MicroPython ${COMMIT:0:8} from $GIT_URL (once)" >&2; fi
  export GIT_TERMINAL_PROMPT=0 GIT_HTTP_LOW_SPEED_LIMIT=1000 GIT_HTTP_LOW_SPEED_TIME=$FETCH_TIMEOUT
  # The server must answer within the timeout (on a filtered network a connect stalls for
  # minutes); the download may then take 20 times as long, but never stall that long.
  if ! bounded "$FETCH_TIMEOUT" git ls-remote "$GIT_URL" HEAD >/dev/null 2>"$err"; then
    [ -s "$err" ] || echo "fatal: no answer within $FETCH_TIMEOUT s" >"$err"
  elif git init -q "$FETCH_TMP" 2>"$err" \
      && bounded $((FETCH_TIMEOUT * 20)) git -C "$FETCH_TMP" fetch -q --depth 1 "$GIT_URL" "$COMMIT" 2>"$err" \
      && git -C "$FETCH_TMP" -c advice.detachedHead=false checkout -q FETCH_HEAD 2>"$err"; then
    got=$(git -C "$FETCH_TMP" rev-parse HEAD)
    if [ "$got" != "$COMMIT" ]; then
      echo "fatal: got commit $got" >"$err"
    elif [ ! -f "$FETCH_TMP/py/mpconfig.h" ]; then
      echo "fatal: commit ${COMMIT:0:8} is not a MicroPython source tree" >"$err"
    else
      rm -f "$err"
      mv -T "$FETCH_TMP" "$OUT/git/$COMMIT" 2>/dev/null || rm -rf "$FETCH_TMP"   # or another run's, as good
      FETCH_TMP=
      return 0
    fi
  else
    [ -s "$err" ] || echo "fatal: no complete download within $((FETCH_TIMEOUT * 20)) s" >"$err"
  fi
  # git's first fatal/error line, without its prefix, is the reason
  WHY+=$({ grep -m1 -E '^(fatal|error): ' "$err" || tail -1 "$err"; } | sed -E 's/^(fatal|error): //' | tr -d '\r')
  rm -rf "$FETCH_TMP" "$err"
  FETCH_TMP=
  rmdir "$OUT/git" 2>/dev/null || true
  return 1
}

src=${MICROPY_SRC:-}
if [ -z "$src" ]; then
  src=$(ls "$ROOT"/../shared/micropython/micropython-*-src.tar.gz 2>/dev/null | head -1 || true)
fi
if [ -z "$src" ]; then
  if [ ! -f "$OUT/git/$COMMIT/py/mpconfig.h" ]; then
    fetch || skip "no MicroPython source (set MICROPY_SRC to a checkout or a source tarball; none in ../shared/micropython/; $WHY)"
  fi
  src=$OUT/git/$COMMIT
fi
[ -e "$src" ] || skip "MICROPY_SRC=$src does not exist"

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
if [ "$mode" = print-src ]; then
  echo "$MPY"
  exit 0
fi
toolchain

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
    cat "$simdir"/simhw*.py "$ROOT"/tools/idfheap/*
    if [ "$1" = frozen ]; then
      find "$ROOT/firmware" -name '*.py' -not -path '*/__pycache__/*' | sort | xargs sha256sum
    fi; } | sha256sum | cut -c1-16
}

# An ESP32's heap growth (ports/esp32: MICROPY_GC_SPLIT_HEAP_AUTO), into tools/idfheap/'s budget
# (gc.c does arithmetic on a void * there, a GNU extension the unix port warns about)
GROWTH="-DMICROPY_GC_SPLIT_HEAP=1 -DMICROPY_GC_SPLIT_HEAP_AUTO=1 -Wno-pointer-arith -include $ROOT/tools/idfheap/idfheap.h"

build() {  # build NAME MANIFEST
  local name=$1 manifest=$2 bdir=$OUT/build-$1 stamp cfg
  stamp=$(stamp_of "$1" "$2")
  if [ -x "$OUT/micropython-$name" ] && [ "$(cat "$bdir.stamp" 2>/dev/null)" = "$stamp" ]; then
    return
  fi
  echo "esp32-unix: building the 32-bit unix port ($name) from $MPY" >&2
  # make does not see a change of flags or of the force-included header: then from scratch
  cfg=$({ echo "$srcid"; cat "$0" "$ROOT"/tools/idfheap/*; } | sha256sum | cut -c1-16)
  [ "$(cat "$bdir.cfg" 2>/dev/null)" = "$cfg" ] || rm -rf "$bdir" "$bdir.cfg"
  make -s -C "$MPY/mpy-cross" -j"$JOBS" BUILD="$OUT/mpy-cross" >"$OUT/build-$name.log" 2>&1 \
    || { tail -20 "$OUT/build-$name.log" >&2; echo "esp32-unix: mpy-cross build failed (log: $OUT/build-$name.log)" >&2; exit 1; }
  make -C "$MPY/ports/unix" -j"$JOBS" VARIANT=standard BUILD="$bdir" \
    MICROPY_MPYCROSS="$OUT/mpy-cross/mpy-cross" \
    CFLAGS_EXTRA="-m32 -DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT $GROWTH" LDFLAGS_EXTRA=-m32 \
    USER_C_MODULES="$ROOT/tools/idfheap" \
    MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 MICROPY_PY_SSL=0 MICROPY_SSL_MBEDTLS=0 \
    MPY_LIB_DIR="$OUT/empty-lib" FROZEN_MANIFEST="$manifest" >>"$OUT/build-$name.log" 2>&1 \
    || { tail -20 "$OUT/build-$name.log" >&2; echo "esp32-unix: build failed (log: $OUT/build-$name.log)" >&2; exit 1; }
  cp "$bdir/micropython" "$OUT/micropython-$name.tmp"
  mv "$OUT/micropython-$name.tmp" "$OUT/micropython-$name"
  echo "$stamp" > "$bdir.stamp"
  echo "$cfg" > "$bdir.cfg"
}

build frozen "$OUT/frozen-manifest.py"
build plain "$OUT/plain-manifest.py"
echo "$OUT/micropython-frozen"
echo "$OUT/micropython-plain"
