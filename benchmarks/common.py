"""Shared benchmark helpers: devices, timing, peak matmul FLOP/s, peak memory, result files."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from langbridge.utils import atomic_write_text, peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """bf16 autocast on GPU (the recipe's mixed precision); plain fp32 everywhere else."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


# ----------------------------------------------------------------------------------------------------------------
# Peak matmul throughput: the denominator of MFU, measured in the same run on the same machine.
def measure_matmul_peak(
    device: torch.device, dtype: torch.dtype, size: int | None = None, seconds: float = 2.0
) -> dict[str, float]:
    """Best FLOP/s of a large square `torch.matmul` (2 n^3 FLOPs each), repeated for about `seconds`.

    The best repetition is the peak: on a shared machine slower repetitions measure other people's load."""
    if size is None:
        size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm up (allocator, BLAS threads, cuBLAS heuristics)
    sync(device)
    rates, cpu_rates = [], []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(rates) < 3:
        t0, c0 = time.perf_counter(), time.process_time()
        torch.matmul(a, b, out=out)
        sync(device)
        rates.append(2 * size**3 / (time.perf_counter() - t0))
        cpu_rates.append(2 * size**3 / max(time.process_time() - c0, 1e-9))
    return {
        "peak_flops": max(rates),
        "median_flops": statistics.median(rates),
        # FLOPs per second of this process's CPU time: with other jobs on the machine, comparing work per CPU
        # second (training vs matmul) is robust to time slicing, which wall-clock MFU is not.
        "peak_flops_per_cpu_s": max(cpu_rates),
        "size": size,
        "dtype": str(dtype).removeprefix("torch."),
        "repetitions": len(rates),
    }


def measure_machine_peak(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> dict[str, Any]:
    """The peak the machine offers this process now: on CPU the best of one thread and all cores (on a shared
    machine one thread can be the faster), restoring the thread setting; on GPU the plain measurement."""
    if device.type != "cpu":
        return measure_matmul_peak(device, dtype, seconds=seconds)
    current = torch.get_num_threads()
    counts = sorted({1, os.cpu_count() or 1, current})
    by_threads = {}
    try:
        for n in counts:
            torch.set_num_threads(n)
            by_threads[n] = measure_matmul_peak(device, dtype, seconds=seconds / len(counts))
    finally:
        torch.set_num_threads(current)
    best = max(by_threads.values(), key=lambda r: r["peak_flops"])
    return {
        **best,
        "peak_flops_per_cpu_s": max(r["peak_flops_per_cpu_s"] for r in by_threads.values()),
        "by_threads": {str(n): round(r["peak_flops"] / 1e9, 2) for n, r in by_threads.items()},
        "threads_used_for_model": current,
    }


def busy_cores(seconds: float = 1.0) -> float | None:
    """Cores that other processes keep busy now, from /proc/stat over `seconds` (None where unreadable). Unlike the
    load average, which lags a minute, this sees a job that has just ended as gone."""

    def read() -> tuple[int, int]:
        values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(values), values[3] + values[4]  # all ticks, idle + iowait ticks

    try:
        total0, idle0 = read()
        time.sleep(seconds)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return None
    ticks = total1 - total0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / ticks) if ticks > 0 else None


def choose_threads(requested: str | int | None) -> tuple[int, str]:
    """(threads, why). "auto": all cores on an idle machine, one thread when other processes already keep the
    cores busy: OpenMP work split over descheduled threads then waits a scheduler slice at every barrier."""
    cores = os.cpu_count() or 1
    if requested not in (None, "auto"):
        return int(requested), "requested"
    busy = busy_cores()
    if busy is None:
        return cores, "all cores (CPU use of other processes unknown)"
    if busy > 0.5:
        return 1, f"1 thread: other processes keep {busy:.1f} of {cores} cores busy (shared machine)"
    return cores, f"{cores} threads: other processes use {busy:.1f} of {cores} cores"


# ----------------------------------------------------------------------------------------------------------------
# Peak memory of one phase.
def _vm_hwm_mb() -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(r"VmHWM:\s+(\d+)\s+kB", text)
    return int(m.group(1)) / 1024 if m else None


def _reset_vm_hwm() -> bool:
    """Linux resets the peak-RSS mark when 5 is written to /proc/self/clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@dataclass
class PeakMemory:
    """Peak memory during a `with` block: RSS on CPU (per phase where Linux allows resetting the mark, otherwise the
    process peak so far), `torch.cuda.max_memory_allocated` on GPU."""

    device: torch.device
    rss_mb: float = 0.0
    rss_scope: str = "phase"
    gpu_mb: float | None = None
    _reset: bool = field(default=False, repr=False)

    def __enter__(self) -> PeakMemory:
        self._reset = _reset_vm_hwm()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        hwm = _vm_hwm_mb() if self._reset else None
        if hwm is None:
            self.rss_mb, self.rss_scope = peak_rss_mb(), "process"
        else:
            self.rss_mb = hwm
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.gpu_mb = torch.cuda.max_memory_allocated(self.device) / 2**20

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peak_rss_mb": round(self.rss_mb, 1), "rss_scope": self.rss_scope}
        if self.gpu_mb is not None:
            out["peak_gpu_mb"] = round(self.gpu_mb, 1)
        return out


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    sync(device)
    return result, time.perf_counter() - t0, time.process_time() - c0


# ----------------------------------------------------------------------------------------------------------------
def system_info(device: torch.device) -> dict[str, Any]:
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomic: readers see the old file or the new one, never a partial one."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
