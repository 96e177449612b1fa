"""citynode: flash, deploy, configure, calibrate, field-test and watch city sensor nodes."""
__version__ = "0.3.1"
