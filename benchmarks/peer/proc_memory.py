"""Process memory from /proc for both sides of the peer benchmark (plain Python: the official side imports it from
its own environment, where langbridge is not installed)."""

from __future__ import annotations

from pathlib import Path


def rss_mb(field: str) -> float | None:
    """A /proc/self/status memory field in MB (VmHWM: peak resident set, VmRSS: current), None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM), so the peak measures generation and not loading."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
