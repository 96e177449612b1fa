"""`make typecheck`: pyright over every file a board runs, against MicroPython's ESP32 stubs (not
CPython's standard library), for each board profile's chip. 0 errors or exit 1.

    python tools/typecheck.py                  # every profile: esp32 and esp32-s3
    python tools/typecheck.py esp32 extra.py   # one profile, with more files (the tests use it)

The stubs are pinned here and installed once into build/stubs/<profile>/ (not into the venv:
they replace the standard library's own stubs, and the two chips' stubs would overwrite each
other). The files: firmware/**.py but manifest.py (a build's) and the simulator (simhw*).
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYRIGHT = Path(sys.executable).with_name("pyright")
STUBS = {
    "esp32": "micropython-esp32-esp32-generic-stubs==1.29.0.post1",
    "esp32-s3": "micropython-esp32-esp32-generic-s3-stubs==1.29.0.post1",
}


def board_files(root=ROOT):
    fw = root / "firmware"
    return sorted(p for p in fw.rglob("*.py")
                  if "__pycache__" not in p.parts and p.name != "manifest.py" and not p.name.startswith("sim"))


def stubs(profile):
    """The profile's stubs directory, installed on first use (and when the pin changes)."""
    d = ROOT / "build" / "stubs" / profile
    pin = STUBS[profile]
    stamp = d / ".pin"
    if not stamp.is_file() or stamp.read_text() != pin:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--upgrade", "--target", str(d), pin], check=True, capture_output=True)
        stamp.write_text(pin)
    return d


def check(profile, extra=()):
    """(errors, [one line per error]) of pyright over the board's files (and `extra`)."""
    d = stubs(profile)
    cfg = d / "pyrightconfig.json"
    cfg.write_text(json.dumps({
        "stubPath": str(d), "typeshedPath": str(d),          # MicroPython's library, not CPython's
        # imports as on the board: flat; the simulated board resolves (it is not checked here)
        "extraPaths": [str(ROOT / "firmware"), str(ROOT / "host_tools" / "citynode" / "sim" / "board")],
        "pythonVersion": "3.12", "typeCheckingMode": "basic",
        "reportMissingModuleSource": "none",                 # stubs without source: the norm here
    }))
    files = [str(p) for p in board_files()] + [str(p) for p in extra]
    p = subprocess.run([str(PYRIGHT), "-p", str(cfg), "--outputjson", *files], capture_output=True, text=True)
    try:
        out = json.loads(p.stdout)
    except ValueError:
        raise SystemExit("typecheck: pyright did not run: %s" % (p.stderr or p.stdout).strip()[-300:])
    lines = []
    for diag in out["generalDiagnostics"]:
        if diag["severity"] == "error":
            rel = Path(diag["file"]).resolve()
            rel = rel.relative_to(ROOT) if rel.is_relative_to(ROOT) else rel
            lines.append("%s:%d: %s" % (rel, diag["range"]["start"]["line"] + 1, diag["message"].splitlines()[0]))
    return len(lines), lines


def main(argv):
    profiles = [argv[0]] if argv and argv[0] in STUBS else list(STUBS)
    extra = argv[1:] if argv and argv[0] in STUBS else argv
    bad = 0
    for profile in profiles:
        n, lines = check(profile, extra)
        for line in lines:
            print("%s: %s" % (profile, line))
        print("typecheck %s (%s): %d files, %d errors" % (profile, STUBS[profile], len(board_files()) + len(extra), n))
        bad += n
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
