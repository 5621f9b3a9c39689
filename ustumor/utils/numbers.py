"""Rates and the numbers of results tables."""
import math


def ratio(numerator, denominator):
    """``numerator / denominator`` as a float; NaN when the denominator is 0 (an undefined rate)."""
    return float(numerator) / denominator if denominator else float("nan")


def format_number(value, digits=3):
    """A float with ``digits`` decimals, anything else as ``str``; "n/a" for None, NaN and inf."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
