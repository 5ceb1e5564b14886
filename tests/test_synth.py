"""Tests of eegstore.synth: synthetic HBN-format releases over real metadata."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest

from eegstore import synth
from eegstore.cli import ArgumentParser, run_cli
from eegstore.data import MINI_R5_METADATA
from eegstore.errors import ConfigError, SourceError
from eegstore.synth import CHANNEL_NAMES, EffectParams, SynthReport, synthesize, write_bdf

CCD = "contrastChangeDetection"


def _bdfs(out: Path) -> list[Path]:
    return sorted(out.rglob("*_eeg.bdf"))


def _vendored(rel: Path) -> Path:
    return MINI_R5_METADATA / rel


# ------------------------------------------------------------------ layout and eegdash

def test_tree_layout_and_sidecars(synth_mini_ccd: Path):
    root = synth_mini_ccd / "EEG2025r5mini"
    files = _bdfs(synth_mini_ccd)
    subjects = sorted({f.name.split("_")[0] for f in files})
    expected = sorted(p.name for p in MINI_R5_METADATA.glob("sub-*"))[:2]
    assert subjects == expected
    assert len(files) == 6  # 3 CCD runs each
    part = pd.read_csv(root / "participants.tsv", sep="\t")
    assert sorted(part["participant_id"]) == expected
    assert (root / "dataset_description.json").is_file()
    assert json.loads((root / "task-contrastChangeDetection_eeg.json").read_text())[
        "SamplingFrequency"] == 100
    prov = json.loads((root / "code" / "eegstore-synth.json").read_text())
    assert prov["seed"] == 0 and prov["tasks"] == [CCD]
    for f in files:
        stem = f.name.removesuffix("_eeg.bdf")
        rel = f.parent.relative_to(root)
        # the real events, byte for byte
        assert (f.parent / f"{stem}_events.tsv").read_bytes() == \
            _vendored(rel / f"{stem}_events.tsv").read_bytes()
        chans = pd.read_csv(f.parent / f"{stem}_channels.tsv", sep="\t")
        assert list(chans["name"]) == list(CHANNEL_NAMES)
    assert not list(root.rglob("*.partial"))


def test_eegdash_offline_finds_every_ccd_recording(synth_mini_ccd: Path):
    from eegdash.dataset import EEGChallengeDataset

    with contextlib.redirect_stdout(io.StringIO()):
        ds = EEGChallengeDataset(release="R5", mini=True, download=False,
                                 cache_dir=str(synth_mini_ccd), task=CCD)
    found = sorted(Path(d.filecache).resolve() for d in ds.datasets)
    assert found == [f.resolve() for f in _bdfs(synth_mini_ccd)]
    raw = ds.datasets[0].raw  # through mne-bids, with the real events as annotations
    assert raw.info["sfreq"] == 100.0 and len(raw.ch_names) == 129
    assert "contrastTrial_start" in set(raw.annotations.description)


def test_mne_reads_each_bdf_with_channels_sfreq_and_duration(synth_mini_ccd: Path):
    root = synth_mini_ccd / "EEG2025r5mini"
    for f in _bdfs(synth_mini_ccd):
        stem = f.name.removesuffix("_eeg.bdf")
        rel = f.parent.relative_to(root)
        orig = json.loads(_vendored(rel / f"{stem}_eeg.json").read_text())
        written = json.loads((f.parent / f"{stem}_eeg.json").read_text())
        raw = mne.io.read_raw_bdf(f, preload=True, verbose="error")
        assert raw.ch_names == list(CHANNEL_NAMES)
        assert raw.info["sfreq"] == 100.0
        assert raw.n_times == round(orig["RecordingDuration"] * 100)
        assert written["RecordingDuration"] == pytest.approx(raw.n_times / 100, abs=1e-9)
        assert written["SamplingFrequency"] == 100
        data_uv = raw.get_data() * 1e6
        assert np.all(data_uv[-1] == 0)  # Cz: flat reference
        rms = data_uv[:-1].std(axis=1)
        assert 5 < np.median(rms) < 60 and rms.min() > 1


# ------------------------------------------------------------------ planted effects

@pytest.fixture(scope="module")
def rt_tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rt4")
    synthesize(out, subjects=4, tasks=[CCD], seed=0, progress=False)
    return out


def _trial_windows(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """Topography-projected windows [stim+0.5, stim+2.5) s and their rt_from_stimulus."""
    from eegdash.hbn.windows import build_trial_table

    topo = synth.rt_topography()[:128]  # the nominal centro-parietal pattern
    proj, rts = [], []
    for f in _bdfs(out):
        d = mne.io.read_raw_bdf(f, preload=True, verbose="error").get_data()[:128] * 1e6
        cov = np.cov(d[:, ::4])  # every 4th sample is plenty for the covariance
        w = np.linalg.solve(cov + 0.01 * np.trace(cov) / 128 * np.eye(128), topo)
        p = (w / (w @ topo)) @ d  # spatial filter with unit gain on the topography
        table = build_trial_table(pd.read_csv(str(f).replace("_eeg.bdf", "_events.tsv"),
                                              sep="\t"))
        table = table[np.isfinite(table["rt_from_stimulus"])]
        for s, rt in zip(table["stimulus_onset"], table["rt_from_stimulus"], strict=True):
            i = round((s + 0.5) * 100)
            if i + 200 <= d.shape[1]:
                proj.append(p[i:i + 200])
                rts.append(rt)
    return np.asarray(proj), np.asarray(rts)


def _quartile_peaks(proj: np.ndarray, rts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = np.digitize(rts, np.quantile(rts, [0.25, 0.5, 0.75]))
    peaks = np.array([np.argmax(proj[q == k].mean(axis=0)) / 100 + 0.5 for k in range(4)])
    medians = np.array([np.median(rts[q == k]) for k in range(4)])
    return peaks, medians


def test_rt_component_moves_with_rt(rt_tree: Path):
    proj, rts = _trial_windows(rt_tree)
    assert len(rts) > 150
    peaks, medians = _quartile_peaks(proj, rts)
    # the peak (seconds after the stimulus) of the averaged component follows the RT quartile
    assert np.all(np.diff(peaks) > 0), (peaks, medians)
    assert np.max(np.abs(peaks - medians)) < 0.35, (peaks, medians)
    # ... and it is the RT that orders them: with shuffled RTs the alignment is gone
    shuffled = np.random.default_rng(0).permutation(rts)
    peaks_s, medians_s = _quartile_peaks(proj, shuffled)
    assert not (np.all(np.diff(peaks_s) > 0) and np.max(np.abs(peaks_s - medians_s)) < 0.35)
    # single trial, single channel: the component is far below the background
    assert proj.std() > 0.5 * EffectParams().rt_amplitude_uv


def test_externalizing_band_amplitude_is_linear_in_the_score(tmp_path: Path):
    # same subject and seed, only the offset added to externalizing changes: the beta
    # source's RMS is strength * (offset + externalizing), so its band power grows with
    # the square of that and the background is unchanged
    ext = float(pd.read_csv(MINI_R5_METADATA / "participants.tsv", sep="\t")
                .sort_values("participant_id")["externalizing"].iloc[0])
    offsets = (0.5, 2.5, 4.5)
    topo = synth.externalizing_topography()[:128]
    powers = []
    for offset in offsets:
        r = synthesize(tmp_path / f"o{offset}", subjects=1, tasks=["RestingState"],
                       progress=False, externalizing_offset=offset)
        d = mne.io.read_raw_bdf(r.files[0], preload=True, verbose="error").get_data()[:128]
        spec = np.abs(np.fft.rfft(d[topo > 0.8] * 1e6, axis=1)) ** 2
        freqs = np.fft.rfftfreq(d.shape[1], 0.01)
        powers.append(spec[:, (freqs > 19) & (freqs < 25)].mean())
    p = np.asarray(powers)
    a2 = (np.asarray(offsets) + ext) ** 2
    assert p[0] < p[1] < p[2]
    assert (p[2] - p[0]) / (p[1] - p[0]) == pytest.approx((a2[2] - a2[0]) / (a2[1] - a2[0]),
                                                          rel=0.15)


# ------------------------------------------------------------------ determinism

def test_same_seed_same_bytes_any_subset_and_workers(synth_mini_ccd: Path, tmp_path: Path):
    # one subject alone gives the same files as within the 2-subject fixture
    r1 = synthesize(tmp_path / "one", subjects=1, tasks=[CCD], progress=False)
    for f in r1.files:
        twin = synth_mini_ccd / f.relative_to(tmp_path / "one")
        assert f.read_bytes() == twin.read_bytes()
    # a different seed changes the signal
    r2 = synthesize(tmp_path / "seed1", subjects=1, tasks=[CCD], seed=1, progress=False)
    assert r2.files[0].read_bytes() != r1.files[0].read_bytes()


def test_two_workers_write_the_same_bytes_as_one(tmp_path: Path):
    kw = {"subjects": 2, "tasks": ["RestingState"], "progress": False}
    serial = synthesize(tmp_path / "w1", workers=1, **kw)
    parallel = synthesize(tmp_path / "w2", workers=2, **kw)
    assert parallel.n_recordings == serial.n_recordings == 2
    for a, b in zip(serial.files, parallel.files, strict=True):
        assert a.relative_to(tmp_path / "w1") == b.relative_to(tmp_path / "w2")
        assert a.read_bytes() == b.read_bytes()


# ------------------------------------------------------------------ BDF writer

@pytest.mark.parametrize("n_times", [1, 7, 997, 1000, 1234])
def test_write_bdf_round_trips_through_mne(tmp_path: Path, n_times: int):
    rng = np.random.default_rng(n_times)
    names = ["A1", "B2", "Cz"]
    data = rng.normal(0, 40, (3, n_times))
    data[0, 0] = 9000.0  # beyond the physical range: clipped
    path = tmp_path / "x.bdf"
    size = write_bdf(path, data, 100.0, names)
    assert size == path.stat().st_size == 256 * 4 + 3 * 3 * n_times
    raw = mne.io.read_raw_bdf(path, preload=True, verbose="error")
    assert raw.ch_names == names and raw.n_times == n_times and raw.info["sfreq"] == 100.0
    expected = np.clip(np.rint(data * 1000), -8e6, 8e6) / 1000
    np.testing.assert_allclose(raw.get_data() * 1e6, expected, rtol=0, atol=1e-9)
    assert not list(tmp_path.glob(".*partial"))


def test_write_bdf_rejects_bad_shapes(tmp_path: Path):
    with pytest.raises(ConfigError, match="expected data of shape"):
        write_bdf(tmp_path / "x.bdf", np.zeros((2, 10)), 100.0, ["A", "B", "C"])


def test_interrupted_write_leaves_no_complete_looking_file(tmp_path: Path, monkeypatch):
    def boom(src, dst):
        raise OSError("disk full")

    from eegstore import _io

    monkeypatch.setattr(_io.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_bdf(tmp_path / "x.bdf", np.zeros((1, 10)), 100.0, ["A"])
    assert not (tmp_path / "x.bdf").exists()
    assert list(tmp_path.iterdir()) == []  # the partial file is removed too


# ------------------------------------------------------------------ full R5 metadata

def test_full_r5_metadata_writes_the_full_release_layout(shared_r5: Path, tmp_path: Path):
    rep = synthesize(tmp_path, metadata=shared_r5, subjects=1, tasks=["RestingState"],
                     progress=False)
    assert rep.root == (tmp_path / "EEG2025r5").resolve()
    assert rep.n_recordings == 1 and rep.files[0].is_file()
    assert rep.to_dict() == SynthReport.from_dict(rep.to_dict()).to_dict()


# ------------------------------------------------------------------ bad arguments

@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"metadata": "/nonexistent/meta"}, SourceError, "expected a metadata directory"),
    ({"tasks": ["noSuchTask"]}, ConfigError, "unknown"),
    ({"subjects": -1}, ConfigError, "positive number of subjects"),
    ({"subjects": 0}, ConfigError, "positive number of subjects"),
    ({"subjects": 999}, ConfigError, "at most 20 subjects"),
    ({"subjects": ["NDARXXXXXXXX"]}, ConfigError, "unknown"),
    ({"seed": -3}, ConfigError, "non-negative integer seed"),
    ({"workers": 0}, ConfigError, "workers >= 1"),
    ({"rt_amplitude_uv": -1.0}, ConfigError, "rt_amplitude_uv >= 0"),
    ({"rt_width_s": float("nan")}, ConfigError, "finite number"),
])
def test_bad_arguments_raise(tmp_path: Path, kwargs, error, match):
    with pytest.raises(error, match=match):
        synthesize(tmp_path, progress=False, **kwargs)
    assert not _bdfs(tmp_path)


def _cli(argv: list[str]) -> tuple[int, str]:
    parser = ArgumentParser(prog="eegstore synth")
    synth.configure_parser(parser)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run_cli("eegstore synth", parser, synth.run, argv)
    return code, err.getvalue()


@pytest.mark.parametrize("argv", [
    ["OUT", "--metadata", "/nonexistent/meta"],
    ["OUT", "--tasks", "noSuchTask"],
    ["OUT", "--subjects", "-2"],
    ["OUT", "--subjects", "0"],
    ["OUT", "--workers", "zero"],
])
def test_cli_misuse_exits_2_with_one_line(tmp_path: Path, argv: list[str]):
    argv = [str(tmp_path / "out"), *argv[1:]]
    code, err = _cli(argv)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err and "error" in err


def test_cli_writes_and_summarises(tmp_path: Path, capsys):
    code, err = _cli([str(tmp_path), "--subjects", "1", "--tasks", "RestingState",
                      "--no-progress", "--seed", "3"])
    assert code == 0, err
    assert "wrote 1 recordings of 1 subjects" in capsys.readouterr().out
    assert len(_bdfs(tmp_path)) == 1


def test_python_m_eegstore_synth_misuse(tmp_path: Path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "eegstore", "synth", str(tmp_path),
                           "--metadata", str(tmp_path / "missing")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "metadata" in lines[0]


def test_effect_params_round_trip():
    p = EffectParams(rt_amplitude_uv=3.0)
    assert EffectParams.from_dict(p.to_dict()) == p
