"""How a MicroPython unix-port process becomes a board: the bootstrap it runs (the simulated board
loaded from the host, the flash directory mounted at "/", boot.py then main.py), the exit codes by which the
firmware asks its supervisor for a reset, and the banners the relay looks for.

    argv = [micropython(), "-i", "-c", BOOT]   # env: CITYNODE_FLASH, CITYNODE_SIMBOARD, ...

Firmware exit codes on the sim: 77 machine.reset(), 78 deep sleep (sleep time in ms written to
.deepsleep_ms), 79 watchdog. The next process gets CITYNODE_RESET=hard/deepsleep/wdt: after
machine.reset() an ESP32 reports a hard reset (ESP_RST_SW and ESP_RST_PANIC are HARD_RESET in
the port's modmachine.c); only Ctrl-D's soft reboot is `soft`.
"""
import importlib.resources
import os
import shutil
import sys
from pathlib import Path

EXIT_RESET, EXIT_DEEPSLEEP, EXIT_WDT = 77, 78, 79
RESTARTS = {EXIT_RESET: "hard", EXIT_DEEPSLEEP: "deepsleep", EXIT_WDT: "wdt"}

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.'
SOFT_REBOOT = b"MPY: soft reboot\r\n"
# The bootstrap talks to the supervisor in-band with APC escape sequences (terminals ignore them);
# the relay strips them from what the client sees.
_MARK, _MARK_END = b"\x1b_cn:", b"\x1b\\"

# Runs in MicroPython (-c). Everything lives inside _cn() so that the REPL's namespace holds only
# what boot.py and main.py defined, as on a board.
BOOT = r"""
def _cn():
    import vfs, os, sys
    sb = os.getenv('CITYNODE_SIMBOARD')
    if sb:
        # The simulated board is the node's hardware, not files on its flash: loaded from the
        # host before the flash directory becomes "/".
        # (frozen first: the virtual ESP32 has them in its image, as a board has its in ROM)
        sys.path[:] = ['.frozen', sb]
        import json, machine, simflash, simhw, simhw_sys, simhw_uart, simhw_bme280
        with open(sb + '/boards/sim.json') as f:
            simhw.PROFILES['sim'] = json.load(f)
        if os.getenv('CITYNODE_NTP'):
            import ntptime   # in place of an ESP32 image's frozen one
    flash = os.getenv('CITYNODE_FLASH')
    try:
        vfs.umount('/')   # the unix port's own view of the host: a board has one filesystem
    except OSError:
        pass
    vfs.mount(simflash.Flash(flash) if sb else vfs.VfsPosix(flash), '/')
    os.chdir('/')
    sys.path[:] = ['', '.frozen', '/lib']
    serial = os.getenv('CITYNODE_SERIAL') == '1'
    def mark(s):
        sys.stdout.write('\x1b_cn:' + s + '\x1b\\')
    def run(f):
        try:
            src = open(f).read()
        except OSError:
            return
        if f == 'main.py':
            mark('run')
        try:
            exec(compile(src, f, 'exec'), globals())
        except SystemExit as e:
            c = e.args[0] if e.args else 0
            if not serial:
                raise
            if c in (77, 78, 79):
                # -i would swallow the exit and start the REPL: the supervisor ends us instead.
                mark('exit:%d' % c)
                import time
                while True:
                    time.sleep(1)
        except BaseException as e:
            if not serial:
                raise
            sys.print_exception(e)
    run('boot.py')
    if os.getenv('CITYNODE_MAIN') == '1':
        run('main.py')
    if serial:
        mark('repl')
_cn()
del _cn
"""


def micropython():
    """The unix port's executable: CITYNODE_MICROPYTHON, the venv's, or the one on PATH."""
    p = os.environ.get("CITYNODE_MICROPYTHON")
    if p:
        return p
    here = Path(sys.executable).with_name("micropython")
    if here.exists():
        return str(here)
    return shutil.which("micropython") or str(here)




def board_dir():
    """The simulated board (simhw*.py, boards/sim.json): the virtual node loads it from here at
    start, so it is never on the node's flash and never deployed."""
    return Path(str(importlib.resources.files("citynode.sim") / "board"))
