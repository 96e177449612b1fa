"""Counts in the tool's messages, in the singular when there is one.

    from citynode.words import counted
    counted(1, "node")                      # "1 node"
    counted(3, "node"), counted(2, "duplicate")   # "3 nodes", "2 duplicates"
"""


def counted(n, noun, plural=None):
    """'1 node', '0 nodes', '2 nodes'; `plural` when the noun does not just take an s."""
    return "%d %s" % (n, noun if n == 1 else plural or noun + "s")
