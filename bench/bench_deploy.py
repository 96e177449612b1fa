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

from citynode.deploy import firmware_files  # noqa: E402
from citynode.sim import SimNode  # noqa: E402

BIN = Path(sys.executable).parent


# Runs a tool's main() inside an interpreter that has already imported it, and reports how long
# the command itself took: the figure without interpreter start-up and imports, which either
# tool pays once per process (a `provision` of several ports pays it once for all).
TIMED = """import sys, time
tool = sys.argv.pop(1)
if tool == "mpremote":
    from mpremote.main import main
    run = lambda: main()
else:
    from citynode.cli import main
    run = lambda: main(sys.argv[1:], standalone_mode=False)
t0 = time.monotonic()
try:
    rc = run()
except SystemExit as e:
    rc = e.code
sys.stdout.flush()
sys.stderr.write("\\nELAPSED %f\\n" % (time.monotonic() - t0))
sys.exit(rc or 0)
"""


def run(node, argv, env):
    w0 = dict(node.wire)
    t0 = time.monotonic()
    tool = os.path.basename(argv[0])
    p = subprocess.run([sys.executable, "-c", TIMED, tool] + argv[1:], capture_output=True, text=True,
                       env=env, timeout=600)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit("failed (%d): %s\n%s%s" % (p.returncode, " ".join(argv), p.stdout[-2000:], p.stderr[-2000:]))
    up = node.wire["to_node"] - w0["to_node"]
    down = node.wire["from_node"] - w0["from_node"]
    inproc = float(p.stderr.rsplit("ELAPSED", 1)[1])
    return {"s": dt, "cmd": inproc, "up": up, "down": down, "out": p.stdout}


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
        return "| %s | %s | %s | %s | %.2f | %.2f | %.2f | %.2f× |" % (
            name, nfiles, format(x["up"], ","), format(x["down"], ","), x["s"], x["cmd"], limit,
            x["cmd"] / limit if limit else float("nan"))

    of, on = r["ours_full"]["summary"], r["ours_none"]["summary"]
    print("## Deploy over USB serial (virtual node, %d baud = %s B/s each way)" % (a.baud, format(int(rate), ",")))
    print()
    print("Firmware: %d files, %s B of source (%d .py, %d .json). citynode sends .mpy v%s, deflate + base64, "
          "several files per raw-paste call; mpremote 1.29 `fs cp -r` sends the sources, "
          "256 B per exec call, and skips files whose SHA-256 matches (3 calls per file)."
          % (len(files), format(src_bytes, ","), sum(1 for f, _ in files if f.endswith(".py")),
             sum(1 for f, _ in files if f.endswith(".json")), of["mpy"].split()[0]))
    print()
    print("| run | files sent | bytes to node | bytes from node | seconds, process | seconds, command | "
          "wire limit (s) | command / limit |")
    print("|---|---|---|---|---|---|---|---|")
    print(row("citynode deploy, full (cold mpy-cross cache)", r["ours_full"], len(of["sent"])))
    print(row("mpremote fs cp -r, full", r["theirs_full"], len(files)))
    print(row("citynode deploy, nothing changed", r["ours_none"], len(on["sent"])))
    print(row("mpremote fs cp -r, nothing changed", r["theirs_none"], 0))
    print()
    full = r["theirs_full"]["s"] / r["ours_full"]["s"], r["theirs_full"]["cmd"] / r["ours_full"]["cmd"]
    none = r["theirs_none"]["s"] / r["ours_none"]["s"], r["theirs_none"]["cmd"] / r["ours_none"]["cmd"]
    print("- full deploy: **%.1f× faster** than mpremote's copy of the sources (%.1f× per command), "
          "%.0f%% of its bytes to the node; %.2f× the wire's limit for the bytes it sends."
          % (full[0], full[1], 100.0 * r["ours_full"]["up"] / r["theirs_full"]["up"],
             r["ours_full"]["cmd"] / (max(r["ours_full"]["up"], r["ours_full"]["down"]) / rate)))
    print("- nothing changed: **%.1f× faster** per command (%.1f× as whole processes): one call "
          "hashes every file on the node and answers with one line." % (none[1], none[0]))
    print("- seconds, process: the whole command as typed, interpreter start-up and imports included "
          "(about 0.15 s for either tool on this machine). seconds, command: the command inside an "
          "interpreter that has already imported the tool. wire limit: the larger direction's bytes "
          "/ %s B/s. citynode's figures include compiling (cold cache for the full deploy) and the "
          "soft reset that boots the new firmware." % format(int(rate), ","))


if __name__ == "__main__":
    main()
