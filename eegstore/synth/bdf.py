"""A BDF (24-bit EDF) writer for the synthetic recordings."""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Sequence

import numpy as np

from eegstore._io import atomic_file
from eegstore.errors import ConfigError

__all__ = ["write_bdf"]

#: Largest number of samples per BDF data record.
_MAX_RECORD_SAMPLES = 1000
#: Samples per channel converted to 24-bit at a time (bounds the writer's memory).
_BLOCK_SAMPLES = 20_000
#: BDF physical range (µV) and digital range: 1 digital unit = 0.001 µV.
_PHYS_MAX_UV = 8000.0
_DIG_MAX = 8_000_000


def _field(value: object, width: int) -> bytes:
    text = str(value)
    if len(text) > width:
        raise ConfigError(f"expected a BDF header field of at most {width} characters, "
                          f"got {text!r}")
    return text.ljust(width).encode("ascii")


def _duration_text(seconds: float) -> str:
    return f"{seconds:.8f}".rstrip("0").rstrip(".")[:8]


def _record_samples(n_times: int, sfreq: float, max_samples: int = _MAX_RECORD_SAMPLES) -> int:
    """Largest record size dividing ``n_times`` whose duration text gives back ``sfreq``."""
    for d in range(min(max_samples, n_times), 0, -1):
        if n_times % d == 0:
            text = _duration_text(d / sfreq)
            if float(text) > 0 and d / float(text) == sfreq:
                return d
    raise ConfigError(f"expected a sampling frequency representable in a BDF header, "
                      f"got {sfreq!r}; use an integer sampling frequency")


def _ascii(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]", "_", text)


def write_bdf(path: str | os.PathLike[str], data_uv: np.ndarray, sfreq: float,
              ch_names: Sequence[str], *, patient: str = "X", recording: str = "X",
              start: _dt.datetime | None = None) -> int:
    """Write a BDF (24-bit) file atomically.

    Values are stored with a resolution of 0.001 µV in ±8000 µV (clipped).  Data
    records hold up to 1000 samples and divide the signal length exactly, so
    the file has exactly ``data_uv.shape[1]`` samples.  The file is written under
    a hidden temporary name in the same folder and renamed when complete.

    Parameters
    ----------
    path : path-like
        Destination ``.bdf`` file.
    data_uv : numpy.ndarray, shape (n_channels, n_times)
        Signals in µV.
    sfreq : float
        Sampling frequency (Hz); ``record samples / sfreq`` must fit 8 characters.
    ch_names : sequence of str
        Channel labels (at most 16 ASCII characters each).
    patient, recording : str
        Header identification fields (truncated to 80 characters).
    start : datetime.datetime, optional
        Start of the recording (default 2000-01-01 00:00:00, deterministic).

    Returns
    -------
    int
        The size of the file in bytes.
    """
    data = np.asarray(data_uv)
    if data.ndim != 2 or data.shape[0] != len(ch_names) or data.shape[1] < 1:
        raise ConfigError(f"expected data of shape ({len(ch_names)}, n_times >= 1), "
                          f"got {data.shape}")
    n_ch, n_times = data.shape
    rec_samples = _record_samples(n_times, float(sfreq))
    n_records = n_times // rec_samples
    rec_dur_text = _duration_text(rec_samples / float(sfreq))
    start = start or _dt.datetime(2000, 1, 1)
    header_bytes = 256 * (n_ch + 1)
    head = b"".join([
        b"\xffBIOSEMI",
        _field(_ascii(patient)[:80], 80), _field(_ascii(recording)[:80], 80),
        _field(start.strftime("%d.%m.%y"), 8), _field(start.strftime("%H.%M.%S"), 8),
        _field(header_bytes, 8), _field("24BIT", 44), _field(n_records, 8),
        _field(rec_dur_text, 8), _field(n_ch, 4),
    ])
    names = [_ascii(n) for n in ch_names]
    cols = [
        b"".join(_field(n, 16) for n in names),
        b"".join(_field("AgAgCl electrode", 80) for _ in names),
        b"".join(_field("uV", 8) for _ in names),
        b"".join(_field(f"{-_PHYS_MAX_UV:g}", 8) for _ in names),
        b"".join(_field(f"{_PHYS_MAX_UV:g}", 8) for _ in names),
        b"".join(_field(-_DIG_MAX, 8) for _ in names),
        b"".join(_field(_DIG_MAX, 8) for _ in names),
        b"".join(_field("HP:0.5Hz LP:50Hz", 80) for _ in names),
        b"".join(_field(rec_samples, 8) for _ in names),
        b"".join(_field("", 32) for _ in names),
    ]
    header = head + b"".join(cols)
    if len(header) != header_bytes:  # pragma: no cover - internal invariant
        raise RuntimeError("BDF header size mismatch")
    scale = _DIG_MAX / _PHYS_MAX_UV
    per_block = max(1, _BLOCK_SAMPLES // rec_samples)  # records converted at a time
    with atomic_file(path, durable=False) as fh:
        fh.write(header)
        for r0 in range(0, n_records, per_block):
            r1 = min(n_records, r0 + per_block)
            seg = data[:, r0 * rec_samples:r1 * rec_samples].astype(np.float64) * scale
            digital = np.rint(np.clip(seg, -_DIG_MAX, _DIG_MAX)).astype("<i4")
            blocks = digital.reshape(n_ch, r1 - r0, rec_samples).transpose(1, 0, 2)
            payload = np.ascontiguousarray(blocks).view(np.uint8).reshape(-1, 4)[:, :3]
            fh.write(np.ascontiguousarray(payload).tobytes())
    return int(header_bytes + 3 * n_ch * n_times)


