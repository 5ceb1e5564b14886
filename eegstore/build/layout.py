"""The layout of a store's signal: its dtype, its unit and the codec of its chunks.

This module is the one place that names the compressors (:data:`COMPRESSORS`,
:data:`DEFAULT_COMPRESSOR`), the storage dtypes (:data:`DTYPES`) and the units
(:data:`UNITS`) a build accepts.  MNE reads signals in volts; a store holds them in
:data:`DEFAULT_UNITS` (microvolts) unless asked otherwise, so that ``float16``
(:data:`DEFAULT_DTYPE`) keeps EEG amplitudes far from its limits and ``xarray.open_zarr``
shows values in the unit ``eeg.attrs["units"]`` states.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np

from eegstore.errors import ConfigError

__all__ = [
    "COMPRESSORS",
    "DEFAULT_COMPRESSOR",
    "DEFAULT_DTYPE",
    "DEFAULT_UNITS",
    "DTYPES",
    "UNITS",
    "Compressor",
    "Dtype",
    "Units",
    "check_layout",
    "compressor_codecs",
    "unit_scale",
]

Compressor = Literal["zstd", "blosc-zstd", "blosc-lz4", "lz4", "gzip", "none"]
Dtype = Literal["float32", "float16"]
Units = Literal["V", "uV"]

#: Compressor names accepted by ``build_store``.
COMPRESSORS: tuple[str, ...] = get_args(Compressor)
#: Default compressor, chosen by the layout suite of ``python -m benchmarks run``
#: (``benchmarks/results/results.md``): float16 chunks stored uncompressed are
#: read with no decode at all, and are still smaller than zstd-compressed float32.
DEFAULT_COMPRESSOR: Compressor = "none"
#: Storage dtypes of ``eeg``.
DTYPES: tuple[str, ...] = get_args(Dtype)
DEFAULT_DTYPE: Dtype = "float16"
#: Units of ``eeg`` (``eeg.attrs["units"]``).
UNITS: tuple[str, ...] = get_args(Units)
DEFAULT_UNITS: Units = "uV"
#: Factor from volts (what MNE reads) to each unit.
_SCALE_FROM_VOLTS: dict[str, float] = {"V": 1.0, "uV": 1e6}


def compressor_codecs(name: str) -> list[Any]:
    """Return the Zarr v3 codecs of a compressor name in :data:`COMPRESSORS`.

    Parameters
    ----------
    name : str
        One of :data:`COMPRESSORS`.

    Returns
    -------
    list
        The codec objects (empty for ``"none"``).

    Raises
    ------
    ConfigError
        For any other name.
    """
    import zarr.codecs as zc

    if name == "zstd":
        return [zc.ZstdCodec(level=1)]
    if name == "blosc-zstd":
        return [zc.BloscCodec(cname="zstd", clevel=5, shuffle=zc.BloscShuffle.shuffle)]
    if name == "blosc-lz4":
        return [zc.BloscCodec(cname="lz4", clevel=5, shuffle=zc.BloscShuffle.shuffle)]
    if name == "lz4":  # plain LZ4 (no shuffle): the fastest to decode
        return [zc.BloscCodec(cname="lz4", clevel=5, shuffle=zc.BloscShuffle.noshuffle)]
    if name == "gzip":
        return [zc.GzipCodec(level=5)]
    if name == "none":
        return []
    raise ConfigError(f"expected a compressor in {list(COMPRESSORS)}, got {name!r}")


def unit_scale(units: str) -> float:
    """Return the factor that turns volts into ``units`` (one of :data:`UNITS`).

    Raises
    ------
    ConfigError
        For an unknown unit.
    """
    try:
        return _SCALE_FROM_VOLTS[units]
    except KeyError:
        raise ConfigError(f"expected units in {list(UNITS)}, got {units!r}") from None


def check_layout(dtype: str, units: str, compressor: str) -> None:
    """Raise :class:`ConfigError` unless the three name a layout a build can write."""
    if dtype not in DTYPES:
        raise ConfigError(f"expected dtype in {list(DTYPES)}, got {dtype!r}")
    unit_scale(units)
    compressor_codecs(compressor)


def dtype_max(dtype: str) -> float:
    """Return the largest finite value of a storage dtype."""
    return float(np.finfo(np.dtype(dtype)).max)
