"""The firmware and board profiles this package carries, and the firmware's own config validator
(firmware/config.py, imported as it is) so that the host and the node share one source of truth.

    from citynode import fw
    cfg = fw.validate(json.loads(text))      # raises fw.ConfigError
    fw.FIRMWARE / "main.py"                  # what `deploy` sends, inside the installed package

Everything is found with importlib.resources: the same from a wheel, `pipx install` or a checkout.
"""
import importlib.resources
import importlib.util
import json
import re
import sys
from pathlib import Path

_PKG = importlib.resources.files("citynode")
FIRMWARE = Path(str(_PKG / "firmware"))
BOARDS = Path(str(_PKG / "boards"))
EXAMPLES = Path(str(_PKG / "examples"))   # the configs the demo and the docs start from
# The virtual node's own board: it comes with the simulator, never goes to a board's flash.
SIM_BOARDS = Path(str(_PKG / "sim" / "board" / "boards"))


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def version():
    """The firmware's version, as firmware/version.py writes it."""
    m = re.search(r'^VERSION\s*=\s*"([^"]+)"', (FIRMWARE / "version.py").read_text(), re.M)
    return m.group(1) if m else "unknown"


def _load_config():
    # config.py imports cfgkeys.py by that name, as on a node: the name is ours only while it loads.
    keys = _load("citynode_fw_cfgkeys", FIRMWARE / "cfgkeys.py")
    saved = sys.modules.get("cfgkeys")
    sys.modules["cfgkeys"] = keys
    try:
        return keys, _load("citynode_fw_config", FIRMWARE / "config.py")
    finally:
        if saved is None:
            del sys.modules["cfgkeys"]
        else:
            sys.modules["cfgkeys"] = saved


cfgkeys, config = _load_config()
ConfigError = config.ConfigError


def _profiles():
    return {p.stem: p for d in (BOARDS, SIM_BOARDS) for p in d.glob("*.json")}


def board_names():
    return sorted(_profiles())


def board(name):
    p = _profiles().get(name) if isinstance(name, str) else None
    if p is None:
        shown = name[:40] + "..." if isinstance(name, str) and len(name) > 40 else name
        raise ConfigError("board", "unknown board %r (known: %s)" % (shown, ", ".join(board_names())))
    return json.loads(p.read_text())


def name_problem(key, value):
    """Why `value` cannot be a node's `key` ("node_id", "mqtt.prefix"), by the firmware's own rule
    for that field (its kind and bounds in config.py's schema); None when a node could have it."""
    *outer, last = key.split(".")
    fields = config._TOP
    for k in outer:
        fields = next(f[1] for f in fields if f[0] == k)
    _, kind, _, lo, hi = next(f for f in fields if f[0] == last)
    try:
        config._V({}).field(key, kind, value, lo, hi)
    except ConfigError as e:
        return str(e)[len(key) + 2:]
    return None


def validate(cfg):
    """Validate a config dict the way the node will; returns it with defaults filled."""
    if not isinstance(cfg, dict):
        raise ConfigError("", "config must be a JSON object")
    return config.validate(cfg, board(cfg.get("board")))
