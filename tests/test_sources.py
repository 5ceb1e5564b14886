"""Tests of eegstore.sources: one Recording description from local BIDS or eegdash."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import mne
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eegstore import sources
from eegstore.errors import ConfigError, RecordingError, SourceError
from eegstore.sources import Recording, discover_recordings, read_events, read_raw
from eegstore.synth import write_bdf

CCD = "contrastChangeDetection"


@pytest.fixture(scope="module")
def ccd_root(synth_mini_ccd: Path) -> Path:
    return synth_mini_ccd / "EEG2025r5mini"


def _copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _tiny_bids(root: Path, *, fmt: str = "bdf", sidecars: bool = True,
               subject: str = "S01", task: str = "rest", n_times: int = 250) -> Path:
    """A one-recording BIDS dataset with 4 channels at 50 Hz."""
    eeg = root / f"sub-{subject}" / "eeg"
    eeg.mkdir(parents=True)
    (root / "participants.tsv").write_text(
        "participant_id\tage\texternalizing\tsex\n"
        f"sub-{subject}\t7.5\tn/a\tF\n", encoding="utf-8")
    stem = f"sub-{subject}_task-{task}"
    data = np.random.default_rng(0).normal(0, 20, (4, n_times))
    names = ["Fz", "Cz", "Pz", "Oz"]
    if fmt == "bdf":
        write_bdf(eeg / f"{stem}_eeg.bdf", data, 50.0, names)
    elif fmt == "fif":
        info = mne.create_info(names, 50.0, "eeg")
        mne.io.RawArray(data * 1e-6, info, verbose="error").save(
            eeg / f"{stem}_eeg.fif", verbose="error")
    elif fmt == "set":
        info = mne.create_info(names, 50.0, "eeg")
        raw = mne.io.RawArray(data * 1e-6, info, verbose="error")
        mne.export.export_raw(eeg / f"{stem}_eeg.set", raw, fmt="eeglab", verbose="error")
    if sidecars:
        (eeg / f"{stem}_eeg.json").write_text(json.dumps(
            {"SamplingFrequency": 50, "RecordingDuration": n_times / 50,
             "EEGChannelCount": 4}), encoding="utf-8")
        (eeg / f"{stem}_channels.tsv").write_text(
            "name\ttype\tunits\n" + "".join(f"{n}\tEEG\tuV\n" for n in names), encoding="utf-8")
        (eeg / f"{stem}_events.tsv").write_text(
            "onset\tduration\tvalue\n0.5\tn/a\tgo\n1.25\tn/a\tstop\n", encoding="utf-8")
    return root


# ------------------------------------------------------------------ local BIDS

def test_local_discovery_of_the_synthetic_tree(ccd_root: Path):
    recs = discover_recordings(ccd_root)
    assert len(recs) == 6
    assert [r.id for r in recs] == sorted(r.id for r in recs)
    r = recs[0]
    assert r.id == "sub-NDARAH793FBF_task-contrastChangeDetection_run-1"
    assert (r.task, r.run, r.session, r.release) == (CCD, "1", "", "R5")
    assert r.sfreq == 100.0 and r.n_channels == 129
    raw = mne.io.read_raw_bdf(r.path, preload=False, verbose="error")
    assert r.duration_s == pytest.approx(raw.n_times / 100) and r.n_times == raw.n_times
    assert r.participant["externalizing"] == pytest.approx(-0.224)
    assert r.participant["sex"] == "M" and isinstance(r.participant["age"], float)
    assert r.events_path is not None and Path(r.events_path).is_file()
    assert Path(r.path).is_absolute()
    # filters
    assert [x.id for x in discover_recordings(ccd_root, subjects=["sub-NDARAJ689BVN"])] == \
        [x.id for x in recs if x.subject == "NDARAJ689BVN"]
    assert [x.subject for x in discover_recordings(ccd_root, subjects=1)] == ["NDARAH793FBF"] * 3
    with pytest.raises(SourceError, match="got none"):
        discover_recordings(ccd_root, tasks=["RestingState"])


def test_discovery_reads_no_signal_when_sidecars_are_complete(ccd_root: Path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("discovery opened a signal file")

    monkeypatch.setattr(mne.io, "read_raw", forbidden)
    monkeypatch.setattr(mne.io, "read_raw_bdf", forbidden)
    assert len(discover_recordings(ccd_root)) == 6


def test_headers_agree_with_sidecars(ccd_root: Path):
    assert discover_recordings(ccd_root, read_headers=True) == discover_recordings(ccd_root)


@pytest.mark.parametrize("fmt", ["bdf", "fif", "set"])
def test_formats_and_header_fallback(tmp_path: Path, fmt: str):
    root = _tiny_bids(tmp_path / "ds", fmt=fmt, sidecars=False)
    (rec,) = discover_recordings(root)  # no eeg.json: the header is read (not the data)
    assert (rec.sfreq, rec.n_channels, rec.duration_s) == (50.0, 4, 5.0)
    assert rec.events_path is None and rec.release == ""
    assert rec.participant["externalizing"] is None and rec.participant["age"] == 7.5
    raw = read_raw(rec)
    assert raw.n_times == 250 and raw.ch_names == ["Fz", "Cz", "Pz", "Oz"]
    with pytest.raises(RecordingError, match=r"expected an events\.tsv"):
        read_events(rec)


def test_read_events_and_raw_checks(tmp_path: Path):
    (rec,) = discover_recordings(_tiny_bids(tmp_path / "ds"))
    ev = read_events(rec)
    assert list(ev["value"]) == ["go", "stop"] and ev["onset"].dtype.kind == "f"
    assert math.isnan(ev["duration"].iloc[0])
    wrong = Recording.from_dict({**rec.to_dict(), "sfreq": 250.0})
    with pytest.raises(RecordingError, match="expected 250 Hz"):
        read_raw(wrong)
    wrong = Recording.from_dict({**rec.to_dict(), "n_channels": 129})
    with pytest.raises(RecordingError, match="expected 129 channels"):
        read_raw(wrong)
    url = Recording.from_dict({**rec.to_dict(), "path": Path(rec.path).as_uri()})
    assert read_raw(url, preload=False).n_times == 250
    broken = Recording.from_dict({**rec.to_dict(), "path": str(tmp_path / "nope.bdf")})
    with pytest.raises(RecordingError, match="expected a readable EEG file"):
        read_raw(broken)


def test_paths_cannot_escape_the_source(tmp_path: Path):
    root = _tiny_bids(tmp_path / "ds")
    outside = _tiny_bids(tmp_path / "outside", subject="EVIL")
    (root / "sub-EVIL").symlink_to(outside / "sub-EVIL", target_is_directory=True)
    weird = root / "sub-a.b" / "eeg"
    weird.mkdir(parents=True)
    shutil.copy(root / "sub-S01" / "eeg" / "sub-S01_task-rest_eeg.bdf",
                weird / "sub-a.b_task-rest_eeg.bdf")
    assert [r.subject for r in discover_recordings(root)] == ["S01"]
    for bad in (["../outside"], ["sub-../../etc"], ["a/b"]):
        with pytest.raises(ConfigError, match="alphanumeric"):
            discover_recordings(root, subjects=bad)
    with pytest.raises(ConfigError, match="alphanumeric"):
        discover_recordings(root, tasks=["../rest"])


def test_missing_source_and_nested_release_hint(tmp_path: Path, synth_mini_ccd: Path):
    with pytest.raises(SourceError, match="expected a BIDS directory"):
        discover_recordings(tmp_path / "missing")
    with pytest.raises(SourceError, match="EEG2025r5mini"):
        discover_recordings(synth_mini_ccd)


# ------------------------------------------------------------------ Recording

def test_recording_round_trip_hash_and_repr(ccd_root: Path):
    rec = discover_recordings(ccd_root)[0]
    d = rec.to_dict()
    assert json.loads(json.dumps(d)) == d
    again = Recording.from_dict(d)
    assert again == rec and hash(again) == hash(rec)
    assert rec.id in repr(rec)
    with pytest.raises(ConfigError, match="unknown"):
        Recording.from_dict({**d, "colour": "red"})


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=20), st.text(max_size=10), st.text(min_size=1, max_size=20),
       st.text(max_size=5))
def test_recording_id_is_filesystem_safe(subject, session, task, run):
    rec = Recording(path="/x.bdf", subject=subject, session=session, task=task, run=run,
                    release="", sfreq=100.0, n_channels=1, duration_s=1.0)
    rid = rec.id
    assert "/" not in rid and "\\" not in rid and ".." not in rid and "\x00" not in rid
    assert rid.startswith("sub-") and "_task-" in rid
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in rid)


# ------------------------------------------------------------------ eegdash

def test_eegdash_offline_matches_local_discovery(synth_mini_ccd: Path, ccd_root: Path):
    recs = discover_recordings("eegdash:R5-mini", tasks=[CCD], cache_dir=synth_mini_ccd)
    assert recs == discover_recordings(ccd_root)
    one = discover_recordings("eegdash:R5-mini", subjects=["NDARAJ689BVN"],
                              cache_dir=synth_mini_ccd, download=False)
    assert {r.subject for r in one} == {"NDARAJ689BVN"} and len(one) == 3


def test_eegdash_cache_from_environment(synth_mini_ccd: Path, monkeypatch):
    monkeypatch.setenv("EEGSTORE_EEGDASH_CACHE", str(synth_mini_ccd))
    assert sources.default_eegdash_cache() == synth_mini_ccd
    assert len(discover_recordings("eegdash:R5-mini", tasks=[CCD])) == 6


def test_eegdash_online_without_network_fails_fast(tmp_path: Path, monkeypatch):
    # a closed local port stands for "no network" on any machine
    monkeypatch.setenv("EEGDASH_API_URL", "http://127.0.0.1:9")
    with pytest.raises(SourceError, match="expected network access to eegdash"):
        discover_recordings("eegdash:R5", cache_dir=tmp_path / "cache")
    with pytest.raises(SourceError, match="expected network access"):
        discover_recordings("eegdash:R5-mini", cache_dir=tmp_path / "cache", download=True)


def test_eegdash_offline_without_local_tree(tmp_path: Path):
    with pytest.raises(SourceError, match="EEG2025r5mini"):
        discover_recordings("eegdash:R5-mini", cache_dir=tmp_path, download=False)


@pytest.mark.parametrize("source", ["eegdash:X5", "eegdash:", "eegdash:R5-full"])
def test_bad_eegdash_source_strings(source: str):
    with pytest.raises(ConfigError, match="eegdash:RN"):
        discover_recordings(source)


def test_parse_eegdash_source():
    assert sources.parse_eegdash_source("eegdash:R5") == ("R5", False)
    assert sources.parse_eegdash_source("eegdash:r11-mini") == ("R11", True)
