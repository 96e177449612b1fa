# The firmware's version: the one place it is written. The wheel (pyproject), `citynode --version`
# and the node's birth message all read it.
VERSION = "0.4.0"
