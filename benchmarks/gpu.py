"""GPU feed suite: EEGNeX challenge-1 training steps fed by the stream vs an in-GPU tensor.

Runs only when ``torch.cuda.is_available()``; otherwise one record says
``skipped: no CUDA``.  Each feed runs in its own process
(``python -m benchmarks.gpu SPEC OUT``).  Per step the loop measures the
time spent waiting for the next batch on the device (iterator + host-to-device
copy) and the whole step (forward, backward, optimizer; synchronised), after
``warmup`` steps that are not counted.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.datasets import WINDOW_BYTES, prepare_loading_data
from benchmarks.procmon import python_argv, read_files, run_child

__all__ = ["run_feed", "run_gpu_suite"]


def _batches(spec: dict[str, Any], device: Any) -> Iterator[tuple[Any, Any]]:
    import torch

    bs = int(spec["batch_size"])
    if spec["mode"] == "gpu_tensor":
        x_all = torch.from_numpy(np.load(spec["npy"])).to(device)
        y_all = torch.from_numpy(np.load(spec["targets"]).astype(np.float32)).to(device)
        gen = torch.Generator(device=device).manual_seed(int(spec.get("seed", 0)))
        n = x_all.shape[0]
        while True:
            perm = torch.randperm(n, device=device, generator=gen)
            for start in range(0, n - bs + 1, bs):
                idx = perm[start:start + bs]
                yield x_all[idx], y_all[idx]
    else:
        from torch.utils.data import DataLoader

        from eegstore.torch import WindowStream

        stream = WindowStream(spec["zarr"], bs, shuffle=True, seed=int(spec.get("seed", 0)))
        pin = device.type == "cuda"
        epoch = 0
        while True:
            stream.set_epoch(epoch)
            loader = DataLoader(stream, batch_size=None, num_workers=int(spec["workers"]),
                                pin_memory=pin)
            for x, y, _ in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            epoch += 1


def run_feed(spec: dict[str, Any]) -> dict[str, Any]:
    """Train EEGNeX for ``warmup + steps`` steps fed as ``spec['mode']`` says; return timings.

    Parameters
    ----------
    spec : dict
        ``mode`` ("stream" | "gpu_tensor"), ``batch_size``, ``workers``, ``steps``,
        ``warmup``, ``device`` ("cuda" or "cpu", the latter only for testing), data paths.

    Returns
    -------
    dict
        step_ms, data_wait_fraction, windows_per_s, first_batch_s, device.
    """
    import torch
    from braindecode.models import EEGNeX

    device = torch.device(spec.get("device", "cuda"))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    model = EEGNeX(n_chans=int(spec["n_chans"]), n_outputs=1,
                   n_times=int(spec["n_times"])).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.MSELoss()
    it = _batches(spec, device)
    first_batch_s: float | None = None
    wait = 0.0
    total = 0.0
    windows = 0
    steps = int(spec["steps"])
    warmup = int(spec["warmup"])
    for step in range(warmup + steps):
        ts = time.perf_counter()
        x, y = next(it)
        sync()
        tw = time.perf_counter()
        if first_batch_s is None:
            first_batch_s = tw - t0
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x).squeeze(-1), y)
        loss.backward()
        opt.step()
        sync()
        te = time.perf_counter()
        if step >= warmup:
            wait += tw - ts
            total += te - ts
            windows += int(x.shape[0])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"step_ms": 1000.0 * total / max(steps, 1), "data_wait_fraction": wait / total
            if total else None, "windows_per_s": windows / total if total else None,
            "first_batch_s": first_batch_s, "device": name, "steps": steps,
            "status": "ok"}


def run_gpu_suite(cfg: Any, data_root: Path) -> list[dict[str, Any]]:
    """Measure both feeds when CUDA is available; else one skipped record."""
    import torch

    base: dict[str, Any] = {"suite": "gpu", "cache": "warm", "workers": cfg.workers,
                            "batch_size": cfg.batch_size, "bytes_on_disk": None}
    if not torch.cuda.is_available():
        return [{**base, "strategy": "eegnex_feed", "status": "skipped",
                 "reason": "no CUDA", "store_gb": None, "windows_per_s": None,
                 "peak_rss_mb": None, "first_batch_s": None}]
    data = prepare_loading_data(data_root / "size0", cfg.sizes_gb[0],
                                chunk_windows=cfg.chunk_windows, hdf5="loading" in cfg.suites,
                                seed=cfg.seed)
    out = []
    for mode in ("stream", "gpu_tensor"):
        rec = {**base, "strategy": f"eegnex_{mode}", "variant": mode,
               "store_gb": round(data.n_windows * WINDOW_BYTES / 1e9, 4)}
        spec = {"mode": mode, "batch_size": cfg.batch_size, "workers": cfg.workers,
                "steps": 20 if cfg.quick else 300, "warmup": 5 if cfg.quick else 20,
                "device": "cuda", "n_chans": 129, "n_times": 200, "zarr": data.zarr,
                "npy": data.npy, "targets": data.targets, "seed": cfg.seed}
        read_files([data.zarr, data.npy])
        with tempfile.TemporaryDirectory() as tmp:
            sp, op = Path(tmp) / "spec.json", Path(tmp) / "out.json"
            sp.write_text(json.dumps(spec))
            res = run_child(python_argv("benchmarks.gpu", str(sp), str(op)), timeout_s=900,
                            result_path=op)
        payload = res.payload or {"status": "failed",
                                  "reason": f"exit {res.returncode}: {res.stderr_tail[-300:]}"}
        rec.update(payload)
        rec.update(peak_rss_mb=res.peak_rss_mb, peak_pss_mb=res.peak_pss_mb)
        out.append(rec)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    try:
        payload = run_feed(spec)
    except Exception as exc:
        payload = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    Path(argv[1]).write_text(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
