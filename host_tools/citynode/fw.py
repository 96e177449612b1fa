"""Where the firmware and board profiles are, and the firmware's own config validator,
imported from firmware/config.py so that the host and the node share one source of truth.

    from citynode import fw
    cfg = fw.validate(json.loads(text))      # raises fw.config.ConfigError
"""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


config = _load("citynode_fw_config", FIRMWARE / "config.py")
ConfigError = config.ConfigError


def board_names():
    return sorted(p.stem for p in BOARDS.glob("*.json"))


def board(name):
    p = BOARDS / ("%s.json" % name)
    if not isinstance(name, str) or not p.is_file():
        raise ConfigError("board", "unknown board %r (known: %s)" % (name, ", ".join(board_names())))
    return json.loads(p.read_text())


def validate(cfg):
    """Validate a config dict the way the node will; returns it with defaults filled."""
    if not isinstance(cfg, dict):
        raise ConfigError("", "config must be a JSON object")
    return config.validate(cfg, board(cfg.get("board")))
