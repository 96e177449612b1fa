"""Sensor drivers, one module per chip, and the registry from a config `type` to its module.

    import drivers
    s = drivers.make(conf, hw)        # conf: one validated entry of config["sensors"]
    await s.read(values)              # fills values["water_level_cm"] ... or raises SensorError
    errors[name] = drivers.code(e)    # whatever it raised, as the short code that is published

Drivers take every setting from the validated conf: the defaults are config.py's alone.

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


# Air sensors are read first: their air_temp_c corrects the ultrasonic drivers' speed of sound.
_AIR = ("bme280", "dht22")


def rank(conf):
    """Where a sensor comes in a cycle: 0 for air sensors (first), 1 for the rest."""
    return 0 if conf["type"] in _AIR else 1


def code(e):
    """The short code a failed reading publishes in `errors` (docs/contract.md), for any exception."""
    if isinstance(e, SensorError):
        return e.code
    if type(e).__name__ == "TimeoutError":   # asyncio.TimeoutError, without importing asyncio
        return "timeout"
    if isinstance(e, OSError):
        return "not_found" if e.args and e.args[0] in (19, 110, 116) else "io_error"
    return "error"


def make(conf, hw):
    t = conf["type"]
    mod = _ALIAS.get(t, t)
    m = __import__("drivers." + mod, None, None, (mod,))
    return m.Sensor(conf, hw)
