"""Check a store: structure, coordinate/length consistency, chunks, checksums.

:func:`verify_store` reads every ``eeg`` chunk once (one chunk in memory at a
time), recomputes its CRC32 over the uncompressed C-ordered bytes of its valid
windows and compares it with ``chunk_crc32``.  Problems are reported with the
chunk index and the recordings whose windows live in that chunk.

CLI: ``eegstore verify STORE`` (exit 0 clean, 1 problems found).
"""

from __future__ import annotations

import argparse
import json
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eegstore.errors import StoreError
from eegstore.schema import BASE_WINDOW_COORDS, RECORDING_DIM, RECORDING_VARS
from eegstore.store import local_compute, normalize_url, open_store, str_values, zarr_kwargs

__all__ = ["Problem", "VerifyReport", "configure_parser", "run", "verify_store"]


@dataclass(frozen=True)
class Problem:
    """One problem found in a store.

    Attributes
    ----------
    kind : str
        ``structure``, ``length``, ``table``, ``unreadable``, ``checksum`` or ``nonfinite``.
    message : str
        What is wrong.
    chunk : int or None
        Index of the eeg chunk concerned.
    recordings : tuple of str
        Recordings concerned.
    """

    kind: str
    message: str
    chunk: int | None = None
    recordings: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"chunk {self.chunk}: " if self.chunk is not None else ""
        recs = f" (recordings: {', '.join(self.recordings[:5])}" \
               f"{' ...' if len(self.recordings) > 5 else ''})" if self.recordings else ""
        return f"[{self.kind}] {where}{self.message}{recs}"


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_store`."""

    store: str
    n_windows: int = 0
    n_chunks: int = 0
    n_chunks_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def __str__(self) -> str:
        head = (f"{self.store}: {self.n_windows} windows, {self.n_chunks_checked}/"
                f"{self.n_chunks} chunks checked, ")
        if self.ok:
            return head + "no problems"
        return head + f"{len(self.problems)} problem(s):\n" + "\n".join(
            f"  {p}" for p in self.problems)


def _recordings_in(chunk: int, k: int, firsts: np.ndarray, counts: np.ndarray,
                   ids: np.ndarray) -> tuple[str, ...]:
    a, b = chunk * k, (chunk + 1) * k
    sel = (counts > 0) & (firsts < b) & (firsts + counts > a)
    return tuple(str(x) for x in ids[sel])


def verify_store(store: str | Path, *, storage_options: Mapping[str, Any] | None = None,
                 progress: bool = False) -> VerifyReport:
    """Check ``store`` and return what is wrong with it.

    Parameters
    ----------
    store : str or Path
        Local path or fsspec URL.
    storage_options : mapping, optional
        fsspec options.
    progress : bool
        Show a progress bar over chunks.

    Returns
    -------
    VerifyReport
        ``report.ok`` is True when nothing is wrong.
    """
    import zarr
    from tqdm.auto import tqdm

    url = normalize_url(store)
    report = VerifyReport(store=url)
    try:
        ds = open_store(url, storage_options=storage_options)
    except StoreError as exc:
        report.problems.append(Problem("structure", str(exc)))
        return report
    except Exception as exc:
        report.problems.append(Problem("structure", f"cannot open: {type(exc).__name__}: {exc}"))
        return report
    n = int(ds.sizes["window"])
    report.n_windows = n
    # every coordinate / table / checksum array must decode (eeg is checked chunk by chunk)
    for name in sorted(str(v) for v in ds.variables if v != "eeg"):
        try:
            with local_compute():
                ds[name].load()
        except Exception as exc:
            report.problems.append(Problem("unreadable", f"{name} cannot be read: "
                                           f"{type(exc).__name__}: {exc}"))
    if report.problems:
        return report
    ids = str_values(ds[RECORDING_DIM].values)
    status = str_values(ds["recording_status"].values)
    firsts = np.asarray(ds["recording_first_window"].values).astype(np.int64)
    counts = np.asarray(ds["recording_n_windows"].values).astype(np.int64)
    # lengths of the per-recording table
    for name in RECORDING_VARS:
        if ds[name].shape[0] != len(ids):
            report.problems.append(Problem("length", f"{name} has {ds[name].shape[0]} rows, "
                                           f"expected {len(ids)}"))
    if len(set(ids.tolist())) != len(ids):
        report.problems.append(Problem("table", "recording ids are not unique"))
    ok = status == "ok"
    if int(counts[ok].sum()) != n:
        report.problems.append(Problem("table", f"ok recordings hold {int(counts[ok].sum())} "
                                       f"windows, eeg has {n}"))
    expected_first = 0
    win_rec = str_values(ds["recording"].values)
    for rid, st, f0, c in zip(ids, status, firsts, counts, strict=True):
        if st != "ok":
            if c != 0:
                report.problems.append(Problem("table", f"skipped recording has {c} windows",
                                               recordings=(str(rid),)))
            continue
        if f0 != expected_first:
            report.problems.append(Problem("table", f"first window {f0}, expected "
                                           f"{expected_first} (windows must be contiguous)",
                                           recordings=(str(rid),)))
        elif not np.all(win_rec[f0:f0 + c] == rid):
            report.problems.append(Problem("table", "per-window 'recording' coordinate does "
                                           "not match the table", recordings=(str(rid),)))
        expected_first = int(f0 + c)
    for name in BASE_WINDOW_COORDS:
        if name in ds.variables and ds[name].shape[0] != n:
            report.problems.append(Problem("length", f"{name} has {ds[name].shape[0]} values, "
                                           f"expected {n}"))
    # chunks and checksums
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = zarr.open_consolidated(**zarr_kwargs(url, storage_options, True), mode="r",
                                   zarr_format=3)
    eeg: Any = g["eeg"]
    k = int(eeg.chunks[0])
    n_chunks = -(-n // k) if n else 0
    report.n_chunks = n_chunks
    crcs = np.asarray(ds["chunk_crc32"].values).astype(np.int64)
    if ds.attrs.get("checksums") == "none":  # stores written without checksums (testing)
        crcs = np.zeros(0, dtype=np.int64)
    elif len(crcs) != n_chunks:
        report.problems.append(Problem("length", f"chunk_crc32 has {len(crcs)} values, "
                                       f"expected {n_chunks}"))
    for c in tqdm(range(n_chunks), desc="chunks", unit="chunk", disable=not progress):
        recs = _recordings_in(c, k, firsts, counts, ids)
        try:
            block = np.asarray(eeg[c * k:min((c + 1) * k, n)])
        except Exception as exc:
            report.problems.append(Problem("unreadable", f"eeg chunk {c} cannot be read: "
                                           f"{type(exc).__name__}: {exc}", c, recs))
            continue
        report.n_chunks_checked += 1
        if c < len(crcs):
            crc = zlib.crc32(np.ascontiguousarray(block).tobytes()) & 0xFFFFFFFF
            if crc != int(crcs[c]):
                report.problems.append(Problem("checksum", f"eeg chunk {c} has CRC32 {crc}, "
                                               f"recorded {int(crcs[c])}", c, recs))
        if not np.all(np.isfinite(block)):
            report.problems.append(Problem("nonfinite", f"eeg chunk {c} holds NaN/Inf", c,
                                           recs))
    return report


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``eegstore verify`` arguments."""
    parser.add_argument("store", help="store path or fsspec URL")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``eegstore verify``; exit 1 when problems are found."""
    report = verify_store(args.store)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report)
    return 0 if report.ok else 1
