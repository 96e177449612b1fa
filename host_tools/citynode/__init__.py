"""citynode: flash, deploy, configure, calibrate, field-test and watch city sensor nodes.

The library (every module but cli/) runs without Click: its functions take keyword arguments,
return plain values and raise citynode.errors.CitynodeError (its exit_code is the contract's exit code).

    from citynode import deploy, transport
    with transport.Device("/dev/ttyUSB0") as dev:
        summary = deploy.deploy(dev)     # {"sent": [...], "bytes": ..., ...}
"""
from .fw import version as _version

__version__ = _version()
