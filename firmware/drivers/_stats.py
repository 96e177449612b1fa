"""Robust statistics for a burst of ranging samples, in integers and without allocating.

Pure: no `machine`, no I/O; runs unchanged on CPython and MicroPython. Samples are integers
(echo microseconds, millimetres) held in a preallocated array; the helpers sort and compact
that array in place, so a burst costs no heap per sample.

    buf, tmp = array("i", [0] * 31), array("i", [0] * 31)
    kept = _stats.reject(buf, n, 3.0, 58, tmp)   # buf[:kept]: the pings within 3 MAD
    cm = _stats.level_cm(300.0, _stats.mean(buf, kept) / 58.3, 0.0)
"""


def isort(a, n):
    # Insertion sort: n is at most 31, and sorted() would allocate a list per burst.
    for i in range(1, n):
        v = a[i]
        j = i - 1
        while j >= 0 and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


def median(a, n):
    """The median of a[:n] (sorts a[:n] in place). ValueError when n < 1."""
    if n < 1:
        raise ValueError("median of no samples")
    isort(a, n)
    m2 = a[(n - 1) // 2] + a[n // 2]          # twice the median, an exact integer
    return m2 // 2 if m2 % 2 == 0 else m2 / 2


def reject(a, n, k, floor, tmp):
    """Sort a[:n], then keep at the front of `a` the samples whose distance from the median is
    at most max(k * MAD, floor), MAD being the median absolute deviation (unscaled). Returns how
    many were kept (>= 1 when n >= 1). `floor` keeps a burst whose samples mostly agree exactly
    (MAD = 0) from rejecting a one-count jitter. `tmp` is scratch of at least n entries.

    Everything is done on doubled integers (2*median, 4*MAD) so that no float is made per sample.
    """
    if n < 1:
        return 0
    isort(a, n)
    m2 = a[(n - 1) // 2] + a[n // 2]          # twice the median
    for i in range(n):
        d = 2 * a[i] - m2
        tmp[i] = d if d >= 0 else -d          # 2*|x - median|
    isort(tmp, n)
    mad4 = tmp[(n - 1) // 2] + tmp[n // 2]    # 4*MAD
    lim = k * mad4                            # compared with 2 * (2*|x - median|) = 4*|x - median|
    if lim < 4 * floor:
        lim = 4 * floor
    kept = 0
    for i in range(n):
        d = 2 * a[i] - m2
        if d < 0:
            d = -d
        if 2 * d <= lim:
            a[kept] = a[i]
            kept += 1
    return kept


def mean(a, n):
    """The arithmetic mean of a[:n] (n >= 1), one float."""
    s = 0
    for i in range(n):
        s += a[i]
    return s / n


def trimmed_mean(a, start, step, n):
    """Mean of a[start], a[start+step] ... (n values), without the min and max when n > 2."""
    s = 0
    lo = hi = a[start]
    for i in range(n):
        v = a[start + i * step]
        s += v
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    if n > 2:
        return (s - lo - hi) / (n - 2)
    return s / n


def level_cm(mount_height_cm, distance_cm, offset_cm):
    """Water level above the channel bed: mount height - distance + offset, never below 0
    (a distance beyond the bed is the bed, not a negative depth)."""
    v = mount_height_cm - distance_cm + offset_cm
    return v if v > 0 else 0.0
