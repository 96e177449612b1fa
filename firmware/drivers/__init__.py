"""Sensor drivers, one module per chip, and the registry from a config `type` to its module.

    import drivers
    s = drivers.make(conf, hw)        # conf: one validated entry of config["sensors"]
    await s.read(values)              # fills values["water_level_cm"] ... or raises SensorError

The registry is config.SENSORS (type -> module name, fields): adding a sensor type is its
module here and one entry there. A type's module is named after it, but for the aliases below
(a test keeps this in step with config.SENSORS); so the node need not keep config.py in RAM.
"""
_ALIAS = {"mq135": "mq", "mq7": "mq", "mq2": "mq"}


class SensorError(Exception):
    """A reading that failed in a known way; args[0] is the short code published in `errors`
    (timeout, checksum, out_of_range, warming_up, not_found ...)."""

    @property
    def code(self):
        return self.args[0] if self.args else "error"


def make(conf, hw):
    t = conf["type"]
    mod = _ALIAS.get(t, t)
    m = __import__("drivers." + mod, None, None, (mod,))
    return m.Sensor(conf, hw)
