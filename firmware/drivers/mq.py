"""MQ-135 / MQ-7 / MQ-2 metal-oxide gas sensors on an ADC.

The module's AOUT is the load resistor's voltage in a divider with the sensor: V = Vc·RL/(RL+Rs),
so Rs = RL·(Vc − V)/V (Hanwei/Winsen datasheets, "basic test loop"). The curves give ppm from
Rs/R0 as ppm = a·(Rs/R0)^b; R0 comes from calibration in clean air (R0 = Rs / CLEAN_AIR[type]).

Known lies and what this driver does: Rs drifts for minutes to hours after power-up, so readings
are `warming_up` until `preheat_s` has passed since power-up (the heater is powered with the board,
so it counts from the board's hw.uptime_ms(), which a soft reset does not restart; a board without
it counts from the driver's start; the datasheets ask 24-48 h for a new sensor, 180 s is for a
burnt-in one); the ADC is
noisy, so `samples` reads are averaged (microvolts from the calibrated `read_uv` where the port
has it, else read_u16 scaled to 3.3 V); an ESP32 input clipped near 3.3 V gives a wrong Rs, so a
saturated ADC is `out_of_range`, and ~0 V (no module, AOUT unconnected) is `not_found`.
Saturation is judged on the raw count (read_u16 at full scale), not on read_uv: an ESP32's
calibrated top differs from module to module (eFuse calibration: 3.1 to 3.3 V at 11 dB), so no
one voltage marks it. Rs also
depends on temperature and humidity (datasheet "influence of temperature/humidity" chart, about
±15 % between 10 and 40 °C): this driver does not correct for it, the values are indicative.

Blocking: at most 8 ADC reads (well under 1 ms on an ESP32) between awaits.

    s = mq.Sensor(conf, hw)            # conf: {"type": "mq135", "adc": 34, "gas": "nh3", "r0_kohm": 76.6, ...}
    await s.read(values)               # values["nh3_ppm"] = 4.2
    mq.ppm(1.0, *mq.CURVES["mq135"]["co2"])   # pure: 110.47
"""
import asyncio
import time

from drivers import SensorError

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

# Curve constants (a, b) for ppm = a·(Rs/R0)^b, least-squares power-law fits to the sensitivity
# charts of the Hanwei MQ-135, MQ-7 and MQ-2 datasheets, as published in the regression tables of
# the MQSensorsLib project (github.com/miguel5612/MQSensorsLib, README "Exponential regression";
# its "NH4" is the datasheet's NH3 curve). MQ-2 smoke is not in that table: it is derived here
# from the two-point reading of the MQ-2 chart published by Sandbox Electronics (Rs/R0 = 3.39 at
# 200 ppm, log-log slope −0.44): b = 1/−0.44, a = 200·3.39^(1/0.44). The second column is Rs/R0
# in clean air, read off the same charts: what calibration divides Rs by to get R0.
# A node needs one curve: the table stays text until CURVES or CLEAN_AIR is asked for (2 KB of
# dicts and floats less in RAM).
_TABLE = const("""
mq135 3.6   co 605.18 -3.937  alcohol 77.255 -3.18  co2 110.47 -2.862
            toluene 44.947 -3.445  nh3 102.2 -2.473  acetone 34.668 -3.369
mq7   27.5  h2 69.014 -1.374  co 99.042 -1.518
mq2   9.83  h2 987.99 -2.162  lpg 574.25 -2.222  co 36974.0 -3.109  alcohol 3616.1 -2.675
            propane 658.71 -2.168  smoke 3206.5 -2.2727
""")


def _table():
    # {type: (clean air Rs/R0, {gas: (a, b)})}: a type starts with "mq", then its ratio and
    # its gases, each followed by its a and b.
    t = {}
    w = _TABLE.split()
    i = 0
    while i < len(w):
        if w[i][:2] == "mq":
            c = {}
            t[w[i]] = (float(w[i + 1]), c)
            i += 2
        else:
            c[w[i]] = (float(w[i + 1]), float(w[i + 2]))
            i += 3
    return t


def __getattr__(name):
    # CURVES {type: {gas: (a, b)}} and CLEAN_AIR {type: Rs/R0 in clean air}, made when asked for.
    if name == "CURVES":
        return {k: v[1] for k, v in _table().items()}
    if name == "CLEAN_AIR":
        return {k: v[0] for k, v in _table().items()}
    raise AttributeError(name)


_SAT_U16 = const(65000)     # the last 1 % of the raw range: the ESP32 ADC is flat there
_ZERO_UV = const(20000)     # below 20 mV there is no sensor on the pin
_BATCH = const(8)


def ppm(rs_r0, a, b):
    """a·(Rs/R0)^b; ValueError when Rs/R0 is not positive."""
    if not rs_r0 > 0:
        raise ValueError("mq: Rs/R0 must be > 0")
    return a * rs_r0 ** b


def rs_kohm(v, vc, rl_kohm):
    """Sensor resistance from the load-resistor voltage v (same unit as vc); ValueError when v
    is not within (0, vc)."""
    if not 0 < v < vc:
        raise ValueError("mq: output voltage outside (0, Vc)")
    return rl_kohm * (vc - v) / v


class Sensor:
    warmup_ms = 0

    def __init__(self, conf, hw):
        self.conf = conf
        self.key = conf["gas"] + "_ppm"
        self.a, self.b = _table()[conf["type"]][1][conf["gas"]]
        self._adc = hw.adc(conf["adc"])
        self._uv = hasattr(self._adc, "read_uv")
        self._t0 = time.ticks_ms()
        self._uptime = getattr(hw, "uptime_ms", None)
        self._warm = False

    def heated_ms(self):
        """How long the heater has been on: since power-up where the board knows it."""
        up = self._uptime() if self._uptime else None
        return up if up is not None else time.ticks_diff(time.ticks_ms(), self._t0)

    async def measure_uv(self):
        """The mean ADC input in µV over `samples` reads; `out_of_range` if any read is clipped
        (one clipped read pulls the mean below the real voltage)."""
        adc = self._adc
        n = self.conf["samples"]
        s = 0
        for i in range(n):
            if i and i % _BATCH == 0:
                await asyncio.sleep_ms(1)
            raw = adc.read_u16()
            if raw >= _SAT_U16:
                raise SensorError("out_of_range")
            # Sum in µV stays a small int: 256 x 3.3e6 < 2**30.
            s += adc.read_uv() if self._uv else raw * 3223 // 64  # 3.3 V / 65535 = 50.36 µV a count
        return s // n

    async def measure_rs(self):
        """Rs in kΩ now (for calibration: R0 = Rs / CLEAN_AIR[type] in clean air)."""
        c = self.conf
        uv = await self.measure_uv()
        if uv < _ZERO_UV:
            raise SensorError("not_found")
        v = uv * c["divider"] / 1000000
        try:
            return rs_kohm(v, c["vc_v"], c["rl_kohm"])
        except ValueError:
            raise SensorError("out_of_range")

    async def read(self, values):
        if not self._warm:
            if self.heated_ms() < self.conf["preheat_s"] * 1000:
                raise SensorError("warming_up")
            self._warm = True   # once warm, stay warm: ticks_ms wraps, the heater does not cool
        rs = await self.measure_rs()
        values[self.key] = round(ppm(rs / self.conf["r0_kohm"], self.a, self.b), 2)
