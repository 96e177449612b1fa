"""Pseudo-terminal and process plumbing for the virtual node: raw mode with a board's Ctrl-C,
a child that dies with its supervisor, and whether a process is parked in a system call.

    set_raw(fd, isig=True)        # the node's side: a Ctrl-C byte raises SIGINT
    parked(pid)                   # True: safe to deliver that Ctrl-C now
"""
import ctypes
import os
import select
import signal
import termios
import tty


def pdeathsig():
    # The child dies with the thread that forked it, so a supervisor that is killed leaves no
    # MicroPython process behind.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
        return lambda: prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return lambda: None


def set_raw(fd, isig=False):
    tty.setraw(fd)
    if isig:
        # A board turns a Ctrl-C byte into KeyboardInterrupt while a program runs; the unix port
        # does it through SIGINT, so the line discipline must raise it. The REPL switches ISIG
        # off itself while it reads a line.
        a = termios.tcgetattr(fd)
        a[3] |= termios.ISIG
        a[6][termios.VINTR] = 3
        termios.tcsetattr(fd, termios.TCSANOW, a)


_FUTEX = {"x86_64": "202", "aarch64": "98", "armv7l": "240", "i686": "240"}.get(os.uname().machine)


def parked(pid):
    """True when the process sleeps in a system call (not a futex): no interpreter lock held."""
    try:
        with open("/proc/%d/syscall" % pid) as f:
            nr = f.read().split(None, 1)[0]
    except (OSError, IndexError):
        return True   # nothing to go by (no /proc): deliver at once
    return nr.isdigit() and nr != _FUTEX


def reading_stdin(pid):
    """True when the process waits in read(0, ...): a REPL prompt or a raw paste taking input."""
    try:
        with open("/proc/%d/syscall" % pid) as f:
            parts = f.read().split()
    except OSError:
        return True   # nothing to go by: assume it reads what we write
    return len(parts) > 1 and parts[0] == "0" and int(parts[1], 16) == 0


def hung_up(fd):
    """True while nobody has the client side of the pty whose master is `fd` open."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    ev = p.poll(0)
    return bool(ev and ev[0][1] & (select.POLLHUP | select.POLLERR))
