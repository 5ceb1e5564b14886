"""The signal model of the synthetic recordings (see :mod:`eegstore.synth`).

Everything here is in µV and depends only on the seeds and the parameters, never on
files written: :func:`synth_signal` returns one recording's signal.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from eegstore.errors import ConfigError

__all__ = ["CCD_TASK", "CHANNEL_NAMES", "SFREQ", "EffectParams", "externalizing_topography",
           "rt_topography", "stable_int", "synth_signal"]

#: Sampling frequency of the synthetic recordings (Hz), as in the challenge data.
SFREQ: float = 100.0
#: The 129 HBN channel names; ``Cz`` is the (flat) reference.
CHANNEL_NAMES: tuple[str, ...] = (*(f"E{i}" for i in range(1, 129)), "Cz")
#: Task whose trials carry the RT effect.
CCD_TASK = "contrastChangeDetection"
_N_BACKGROUND = 64
#: Samples of sensor noise drawn at a time (bounds the memory).
_BLOCK_SAMPLES = 20_000


def stable_int(*parts: object) -> int:
    """Return a 64-bit integer that depends only on ``parts`` (a seed for a random stream)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class EffectParams:
    """Strengths of the planted effects and of the background.

    Parameters
    ----------
    rt_amplitude_uv : float
        Peak of the response-locked component at its topography maximum (µV),
        default 16.0 (the background is about 25 µV RMS per channel; averaged
        over a 2 s window the component's power is about 0.1-0.2 of the
        background's at its best channel and far less elsewhere).
    rt_width_s : float
        Standard deviation of the component's decay after the response (s),
        default 0.15.
    rt_ramp_onset_s : float
        Time after the stimulus where the component starts ramping up (s),
        default 0.2.
    externalizing_strength_uv : float
        RMS (µV at the topography maximum) of the ~22 Hz source per unit of
        ``externalizing``, default 6.0.
    externalizing_offset : float
        Added to ``externalizing`` before scaling, default 2.0 (R5 scores lie in
        [-1.68, 2.32]); negative results are clipped at 0.
    background_uv : float
        Typical RMS of the background per channel (µV), default 25.0.
    """

    rt_amplitude_uv: float = 16.0
    rt_width_s: float = 0.15
    rt_ramp_onset_s: float = 0.2
    externalizing_strength_uv: float = 6.0
    externalizing_offset: float = 2.0
    background_uv: float = 25.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ConfigError(f"expected a finite number for {name}, got {value!r}")
        for name in ("rt_width_s", "background_uv"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"expected {name} > 0, got {getattr(self, name)!r}")
        for name in ("rt_amplitude_uv", "externalizing_strength_uv", "rt_ramp_onset_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"expected {name} >= 0, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, float]:
        """Return the parameters as a JSON-serialisable dict."""
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EffectParams:
        """Build parameters from :meth:`to_dict` output."""
        return cls(**{k: float(v) for k, v in d.items()})




# --------------------------------------------------------------------------- signals
@functools.lru_cache(maxsize=1)
def _positions() -> np.ndarray:
    import mne

    montage = mne.channels.make_standard_montage("GSN-HydroCel-129")
    pos = montage.get_positions()["ch_pos"]
    xyz = np.array([pos[n] for n in CHANNEL_NAMES], dtype=np.float64)
    xyz -= xyz.mean(axis=0)
    unit: np.ndarray = xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
    return unit


def _blob(center: np.ndarray, width: float) -> np.ndarray:
    pos = _positions()[:128]
    c = center / np.linalg.norm(center)
    d2 = np.sum((pos - c) ** 2, axis=1)
    weights: np.ndarray = np.exp(-d2 / (2.0 * width**2))
    return weights


def _at(name: str) -> np.ndarray:
    position: np.ndarray = _positions()[CHANNEL_NAMES.index(name)]
    return position


def rt_topography() -> np.ndarray:
    """Nominal topography of the RT component over :data:`CHANNEL_NAMES` (max 1, Cz 0).

    Each subject's pattern is this one, slightly shifted and scaled.

    Returns
    -------
    numpy.ndarray, shape (129,)
    """
    topo = _blob(_at("E62"), 0.6)
    return np.append(topo / topo.max(), 0.0)


def externalizing_topography() -> np.ndarray:
    """Nominal topography of the externalizing (beta) source over :data:`CHANNEL_NAMES`.

    Returns
    -------
    numpy.ndarray, shape (129,)
        Maximum 1 (frontal), 0 at ``Cz``.
    """
    topo = _blob(_at("E11"), 0.55)
    return np.append(topo / topo.max(), 0.0)


def _colored(rng: np.random.Generator, envelopes: np.ndarray, n_times: int) -> np.ndarray:
    """Unit-variance noise with the given amplitude spectra, shape (k, n_times)."""
    import scipy.fft

    k, n_freq = envelopes.shape
    spec = rng.standard_normal((k, n_freq), dtype=np.float32) \
        + 1j * rng.standard_normal((k, n_freq), dtype=np.float32)
    spec *= envelopes.astype(np.float32)
    x = scipy.fft.irfft(spec, n=n_times, axis=1).astype(np.float32, copy=False)
    std = x.std(axis=1, keepdims=True)
    scaled: np.ndarray = x / np.where(std > 0, std, 1.0)
    return scaled


def _subject_model(base_seed: int, subject: str, params: EffectParams) -> dict[str, Any]:
    # background source layout shared by all subjects ("head model"), jittered per subject
    layout = np.random.default_rng(stable_int(base_seed, "layout"))
    n_bg = _N_BACKGROUND
    centers = layout.standard_normal((n_bg, 3))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    centers[:, 2] = np.abs(centers[:, 2]) + 0.2  # upper hemisphere
    widths = layout.uniform(0.18, 0.32, n_bg)
    signs = layout.choice([-1.0, 1.0], n_bg)
    rng = np.random.default_rng(stable_int(base_seed, "subject", subject))
    centers = centers + 0.03 * rng.standard_normal(centers.shape)
    mix = np.stack([s * _blob(c, w) for c, w, s in zip(centers, widths, signs, strict=True)],
                   axis=1)
    mix *= rng.lognormal(0.0, 0.2, n_bg)[None, :]
    gain = rng.lognormal(0.0, 0.1)
    ch_gain = rng.lognormal(0.0, 0.1, 128)
    scale = params.background_uv * 0.85 / np.sqrt(np.median(np.sum(mix**2, axis=1)))
    mix = mix * scale * gain * ch_gain[:, None]
    alpha_mix = np.stack([_blob(_at("E70"), 0.45), _blob(_at("E83"), 0.45)], axis=1)
    alpha_mix *= params.background_uv * rng.uniform(0.4, 0.8) * gain * ch_gain[:, None]
    rt_topo = _blob(_at("E62") + 0.15 * rng.standard_normal(3), 0.6)
    rt_topo /= rt_topo.max()
    ext_topo = _blob(_at("E11") + 0.1 * rng.standard_normal(3), 0.55)
    ext_topo /= ext_topo.max()
    return {
        "mix": mix.astype(np.float32),
        "alpha_mix": alpha_mix.astype(np.float32),
        "alpha_hz": rng.uniform(8.5, 11.5),
        "exponent": rng.uniform(1.6, 2.0),
        "noise_uv": (params.background_uv * 0.5 * rng.uniform(0.15, 0.3, 128)
                     * gain).astype(np.float32),
        "rt_topo": (rt_topo * rng.lognormal(0.0, 0.1)).astype(np.float32),
        "ext_topo": ext_topo.astype(np.float32),
    }


def _trial_onsets(events_tsv: str | None) -> tuple[np.ndarray, np.ndarray]:
    if events_tsv is None:
        return np.empty(0), np.empty(0)
    from eegdash.hbn.windows import build_trial_table

    events = pd.read_csv(events_tsv, sep="\t")
    if not {"onset", "value"} <= set(events.columns):
        return np.empty(0), np.empty(0)
    table = build_trial_table(events)
    if table.empty:
        return np.empty(0), np.empty(0)
    stim = table["stimulus_onset"].to_numpy(float)
    resp = table["response_onset"].to_numpy(float)
    ok = np.isfinite(stim) & np.isfinite(resp) & (resp > stim)
    return stim[ok], resp[ok]


def _rt_component(stim: np.ndarray, resp: np.ndarray, n_times: int, params: EffectParams,
                  rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n_times, dtype=np.float32)
    amps = rng.lognormal(0.0, 0.25, len(stim))
    tail = math.ceil(4 * params.rt_width_s * SFREQ)
    for s, r, a in zip(stim, resp, amps, strict=True):
        r_idx = round(float(r) * SFREQ)
        on_idx = round((float(s) + params.rt_ramp_onset_s) * SFREQ)
        if r_idx >= n_times:
            continue
        if on_idx < r_idx:
            ramp = np.linspace(0.0, 1.0, r_idx - on_idx, endpoint=False)
            lo = max(on_idx, 0)
            out[lo:r_idx] += a * ramp[lo - on_idx:]
        stop = min(n_times, r_idx + tail + 1)
        t = (np.arange(r_idx, stop) - r * SFREQ) / (params.rt_width_s * SFREQ)
        out[r_idx:stop] += a * np.exp(-0.5 * t**2)
    return out


def synth_signal(*, subject: str, task: str, n_times: int, externalizing: float | None,
                 events_tsv: str | None, seed: int, base_seed: int,
                 params: EffectParams) -> np.ndarray:
    """Return the (129, n_times) signal of one recording in µV (float32).

    Parameters
    ----------
    subject, task : str
        The recording's subject label and task.
    n_times : int
        Samples.
    externalizing : float or None
        The subject's externalizing score (``None``: missing, no effect).
    events_tsv : str or None
        The recording's events (trials of the RT effect).
    seed : int
        Seed of the recording's own random stream.
    base_seed : int
        Seed of the run (subject-level properties, the shared layout).
    params : EffectParams
        Effect strengths.

    Returns
    -------
    ndarray of float32, shape (129, n_times)
    """
    p = params
    model = _subject_model(base_seed, subject, p)
    rng = np.random.default_rng(seed)
    n = n_times
    freqs = np.fft.rfftfreq(n, 1.0 / SFREQ)
    band = (freqs**2 / (freqs**2 + 0.5**2)) / (1.0 + (freqs / 45.0) ** 8)
    # 1/f^b power with a steeper fall above ~15 Hz (the "knee" of EEG spectra)
    bg_env = band / (freqs + 1.0) ** (model["exponent"] / 2.0) \
        / np.sqrt(1.0 + (freqs / 15.0) ** 4)
    n_bg = model["mix"].shape[1]
    env = np.empty((n_bg + 3, freqs.size))
    env[:n_bg] = bg_env
    env[n_bg:n_bg + 2] = np.exp(-0.5 * ((freqs - model["alpha_hz"]) / 1.0) ** 2)
    env[n_bg + 2] = np.exp(-0.5 * ((freqs - 22.0) / 3.0) ** 2)
    sources = _colored(rng, env, n)
    x = model["mix"] @ sources[:n_bg]
    alpha_gain = 1.6 if task == "RestingState" else 1.0
    x += (alpha_gain * model["alpha_mix"]) @ sources[n_bg:n_bg + 2]
    ext = 0.0 if externalizing is None else externalizing
    ext_rms = max(0.0, p.externalizing_strength_uv * (p.externalizing_offset + ext))
    x += np.float32(ext_rms) * model["ext_topo"][:, None] * sources[n_bg + 2][None, :]
    if task == CCD_TASK and p.rt_amplitude_uv > 0:
        stim, resp = _trial_onsets(events_tsv)
        comp = _rt_component(stim, resp, n, p, rng)
        x += np.float32(p.rt_amplitude_uv) * model["rt_topo"][:, None] * comp[None, :]
    for t0 in range(0, n, _BLOCK_SAMPLES):  # sensor noise, block by block (bounded memory)
        t1 = min(n, t0 + _BLOCK_SAMPLES)
        x[:, t0:t1] += model["noise_uv"][:, None] * rng.standard_normal((128, t1 - t0),
                                                                          dtype=np.float32)
    return np.concatenate([x, np.zeros((1, n), dtype=np.float32)], axis=0)


