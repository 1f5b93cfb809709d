"""Decode floor and memory-bandwidth utilisation (MBU).

Each decode step reads every weight once, whatever the batch size, so no request's TPOT can be below
    decode_floor_s = model_bytes / bandwidth_bytes_per_s
(KV-cache reads only add to it). MBU = (model_bytes / TPOT) / bandwidth. A measured TPOT below the
floor means the measurement is broken (tokens counted wrong, chunks batched by a proxy, wrong model),
and is flagged as such, never reported as a win.
"""

from __future__ import annotations

from pathlib import Path

# Peak memory bandwidth, GB/s (1e9 bytes/s), from the vendors' data sheets; matched on nvidia-smi's name.
GPU_BANDWIDTH_GBPS: dict[str, float] = {
    "H200": 4800.0,
    "H100 NVL": 3900.0,
    "H100 PCIe": 2000.0,
    "H100": 3350.0,  # SXM
    "A100-SXM4-80GB": 2039.0,
    "A100 80GB PCIe": 1935.0,
    "A100": 1555.0,  # 40GB
    "L40S": 864.0,
    "L40": 864.0,
    "A10G": 600.0,
    "A10": 600.0,
    "L4": 300.0,
    "T4": 320.0,
    "V100": 900.0,
}

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def bandwidth_for(gpu_name: str) -> float | None:
    """Longest table key contained in the GPU's name (so "H100 PCIe" wins over "H100")."""
    hits = [k for k in GPU_BANDWIDTH_GBPS if k.lower() in gpu_name.lower()]
    return GPU_BANDWIDTH_GBPS[max(hits, key=len)] if hits else None


def model_bytes(model_dir: str | Path) -> int | None:
    """Bytes of weight files in the model directory (what each decode step must read)."""
    d = Path(model_dir)
    if not d.is_dir():
        return None
    total = sum(p.stat().st_size for p in d.rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    return total or None


def decode_floor(model_bytes_: int, bandwidth_gbps: float) -> float:
    return model_bytes_ / (bandwidth_gbps * 1e9)


def floor_check(tpot_p50_s: float | None, model_bytes_: int, bandwidth_gbps: float, tolerance: float = 0.05) -> dict:
    floor = decode_floor(model_bytes_, bandwidth_gbps)
    out: dict = {"decode_floor_s": floor, "model_bytes": model_bytes_, "bandwidth_gbps": bandwidth_gbps}
    if tpot_p50_s:
        out["mbu"] = (model_bytes_ / tpot_p50_s) / (bandwidth_gbps * 1e9)
        out["below_floor"] = tpot_p50_s < floor * (1 - tolerance)
    return out
