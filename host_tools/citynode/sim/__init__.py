"""The virtual node: the real firmware on the MicroPython unix port, supervised like a board, with
a serial face that mpremote and every citynode command use as they would a node on USB.

    from citynode.sim import SimNode
    node = SimNode("/tmp/flash", broker="127.0.0.1:1883", serial=True).start()
    node.stop()

One job per module: bootstrap.py (what the MicroPython process runs), node.py (supervision),
relay.py (the byte relay), wire.py (UART pacing), ptys.py (terminal plumbing), registry.py
(running nodes), fleet.py (several nodes). board/ is the simulated board itself, MicroPython code
the node loads from here before it mounts its flash: simhw.py and its chip models, boards/sim.json.
"""
from .bootstrap import EXIT_DEEPSLEEP, EXIT_RESET, EXIT_WDT, board_dir, micropython
from .fleet import fleet, serve
from .node import SimNode, install_firmware
from .registry import registry_dir, running

__all__ = ["SimNode", "fleet", "serve", "running", "registry_dir", "install_firmware", "micropython",
           "board_dir", "EXIT_RESET", "EXIT_DEEPSLEEP", "EXIT_WDT"]
