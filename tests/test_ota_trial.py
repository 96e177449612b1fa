"""A version on trial that refuses the node's config.json (a stricter validator, say) fails its
trial at once and the previous version runs again: safe mode would wait for a cable, and no
watchdog and no no-birth timer run there."""
import json
import shutil

from helpers import wait_for

from citynode import fw
from citynode.sim import SimNode


def test_a_trial_that_refuses_the_config_rolls_back_instead_of_waiting_in_safe_mode(tmp_path):
    flash = tmp_path / "flash"
    SimNode(flash).prepare()                      # the running version: the firmware at the root
    slot = flash / "fw" / "a"
    shutil.copytree(fw.FIRMWARE, slot, ignore=shutil.ignore_patterns("__pycache__", "manifest.py"))
    shutil.copytree(fw.BOARDS, slot / "boards")
    (flash / "fw.json").write_text(json.dumps({"run": "fw/a/", "trial": True, "tries": 0, "prev": "",
                                               "from": "0.4.0", "version": "9.9.9"}))
    # a config no version accepts: the trial's board.load() refuses it
    (flash / "config.json").write_text(json.dumps({"node_id": "trial-01", "board": "sim"}))
    lines = []
    node = SimNode(flash, output=lines.append).start()
    try:
        wait_for(lambda: (flash / "ota_rollback.json").exists(), 30, what="the rollback")
        rb = json.loads((flash / "ota_rollback.json").read_text())
        assert rb["reason"] == "config" and rb["version"] == "9.9.9", rb
        p = json.loads((flash / "fw.json").read_text())
        assert p["run"] == "" and p["trial"] is False, p
        wait_for(lambda: any("safe mode" in ln for ln in lines), 20, what="the previous version's safe mode")
        assert any("refuses the config" in ln for ln in lines), lines
    finally:
        node.kill()
