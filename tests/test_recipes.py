"""Recipes and preprocessing steps: parameters, sample arithmetic, label parity."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import mne
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eegstore.errors import ConfigError, RecordingError
from eegstore.preprocessing import (
    BandPass,
    PickChannels,
    Rereference,
    Resample,
    apply_steps,
    step_from_dict,
    steps_from_dicts,
    steps_to_dicts,
)
from eegstore.recipes import (
    RECIPES,
    Challenge1Recipe,
    Challenge2Recipe,
    FixedRecipe,
    challenge1_trials,
    get_recipe,
    recipe_from_dict,
)

R5 = Path(__file__).resolve().parents[1].parent / "shared" / "hbn-metadata" / "R5"


def _rec(**kw):
    base = dict(id="sub-A_task-x", subject="A", task="contrastChangeDetection", n_channels=129,
                duration_s=100.0, participant={"externalizing": 0.5, "p_factor": 1.0,
                                               "attention": -0.2, "internalizing": 0.1,
                                               "age": 9.0, "sex": "F"})
    base.update(kw)
    return SimpleNamespace(**base)


def _events(rows):
    return pd.DataFrame(rows, columns=["onset", "value", "feedback"])


CCD_ROWS = [
    (0.0, "break cnt", "n/a"),
    (1.0, "contrastTrial_start", "n/a"),
    (2.004, "right_target", "n/a"),
    (2.5, "right_buttonPress", "smiley_face"),
    (4.0, "contrastTrial_start", "n/a"),
    (5.115, "left_target", "n/a"),       # no response: dropped
    (7.0, "contrastTrial_start", "n/a"),
    (8.0, "left_target", "n/a"),
    (8.7, "right_buttonPress", "sad_face"),
    (10.0, "contrastTrial_start", "n/a"),
    (11.0, "left_target", "n/a"),
    (11.4, "left_buttonPress", "smiley_face"),
    (13.0, "end_experiment", "n/a"),
]


# ----------------------------------------------------------------- registry

@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_roundtrip(name):
    r = get_recipe(name)
    assert recipe_from_dict(r.to_dict()) == r
    assert name in repr(r) or type(r).__name__ in repr(r)
    assert r.to_dict()["name"] == name


def test_recipe_errors():
    with pytest.raises(ConfigError, match="expected a recipe in"):
        get_recipe("nope")
    with pytest.raises(ConfigError, match="expected parameters of recipe"):
        get_recipe("fixed", bogus=1)
    with pytest.raises(ConfigError, match="positive"):
        FixedRecipe(window_s=0)
    with pytest.raises(ConfigError, match="'name'"):
        recipe_from_dict({"params": {}})


# --------------------------------------------------------------- challenge 1

def test_challenge1_trials_keep_stimulus_and_response():
    t = challenge1_trials(_events(CCD_ROWS))
    assert list(t["stimulus_onset"]) == [2.004, 8.0, 11.0]
    assert list(t["correct"]) == [True, False, True]
    np.testing.assert_allclose(t["rt_from_stimulus"], [0.496, 0.7, 0.4])


def test_challenge1_sample_arithmetic_and_end_drop():
    r = Challenge1Recipe()
    assert (r.start_offset_samples(100.0), r.stop_offset_samples(100.0),
            r.window_samples(100.0)) == (50, 250, 200)
    # recording ends at 13.3 s: the last trial's window [11.5, 13.5) runs past it
    w = r.make_windows(1330, 100.0, 129, _rec(), _events(CCD_ROWS))
    # stimulus 2.004 s -> sample round(200.4) = 200 -> window start 250
    assert list(w.starts) == [250, 850]
    assert w.n_dropped == 1
    assert w.window_samples == 200
    np.testing.assert_allclose(w.coords["onset"], [2.5, 8.5])
    np.testing.assert_array_equal(w.coords["correct"], [1.0, 0.0])
    assert list(w.coords["response_type"]) == ["right_buttonPress", "right_buttonPress"]
    np.testing.assert_allclose(w.coords["target"], w.coords["rt_from_stimulus"])
    assert math.isclose(r.time_offset_s(), 0.5)


@pytest.mark.parametrize(("rows", "match"), [
    ([(0.0, "contrastTrial_start", "n/a"), ("abc", "left_target", "n/a")], "garbled events"),
    ([(1.0, "contrastTrial_start", "n/a"), (2.0, "left_target", "n/a"),
      (4.0, "contrastTrial_start", "n/a")], "no usable trials"),
])
def test_challenge1_bad_events(rows, match):
    with pytest.raises(RecordingError, match=match):
        Challenge1Recipe().make_windows(5000, 100.0, 129, _rec(), _events(rows))


def test_challenge1_wrong_sfreq_and_missing_events():
    with pytest.raises(RecordingError, match="wrong sfreq: expected 100 Hz, got 500 Hz"):
        Challenge1Recipe().make_windows(5000, 500.0, 129, _rec(), _events(CCD_ROWS))
    with pytest.raises(RecordingError, match="missing events"):
        Challenge1Recipe().make_windows(5000, 100.0, 129, _rec(), None)
    with pytest.raises(RecordingError, match="garbled events: expected columns"):
        Challenge1Recipe().make_windows(5000, 100.0, 129, _rec(),
                                  pd.DataFrame({"onset": [1.0], "kind": ["x"]}))


@pytest.mark.slow
@pytest.mark.skipif(not R5.is_dir(), reason=f"real HBN R5 metadata not found at {R5}")
def test_label_parity_all_r5_ccd_events():
    """Our trial table equals eegdash's for every real R5 CCD events file (no signals)."""
    from eegdash.hbn.windows import build_trial_table

    files = sorted(R5.glob("sub-*/eeg/*_task-contrastChangeDetection_*_events.tsv"))
    assert len(files) == 745
    n_trials = 0
    for f in files:
        ours = challenge1_trials(_read_events_as_build_does(f))
        # what eegdash.annotate_trials_with_target does with the file
        ev = (pd.read_csv(f, sep="\t")
              .assign(onset=lambda d: pd.to_numeric(d["onset"], errors="raise"))
              .sort_values("onset", kind="mergesort").reset_index(drop=True))
        ref = build_trial_table(ev)
        ref = ref[ref["stimulus_onset"].notna() & ref["response_onset"].notna()]
        ref = ref.reset_index(drop=True)
        cols = ["trial_start_onset", "stimulus_onset", "response_onset", "rt_from_stimulus",
                "rt_from_trialstart", "correct", "response_type"]
        pd.testing.assert_frame_equal(ours[cols].reset_index(drop=True), ref[cols],
                                      check_dtype=False, obj=str(f.name))
        n_trials += len(ours)
    assert n_trials > 10_000


def _read_events_as_build_does(path: Path) -> pd.DataFrame:
    """Read an events file through eegstore.sources like a build does."""
    try:
        from eegstore import sources
    except ImportError:  # pragma: no cover - sources lands with the synth helper
        return pd.read_csv(path, sep="\t")
    return sources.read_events(_events_only_recording(path, sources))


def _events_only_recording(path: Path, sources):
    name = path.name.split("_events.tsv")[0]
    parts = dict(p.split("-", 1) for p in name.split("_"))
    return sources.Recording(path=str(path).replace("_events.tsv", "_eeg.bdf"),
                             subject=parts["sub"], session=parts.get("ses", ""),
                             task=parts["task"], run=parts.get("run", ""), release="R5",
                             sfreq=500.0, n_channels=129, duration_s=0.0, participant={},
                             events_path=str(path))


# --------------------------------------------------------------- challenge 2

def test_challenge2_prechecks():
    r = Challenge2Recipe()
    r.precheck(_rec())
    with pytest.raises(RecordingError, match="missing target: expected externalizing"):
        r.precheck(_rec(participant={"externalizing": "n/a"}))
    with pytest.raises(RecordingError, match="wrong channel count: expected 129, got 24"):
        r.precheck(_rec(n_channels=24))
    with pytest.raises(RecordingError, match="too short"):
        r.precheck(_rec(duration_s=3.99))


def test_challenge2_matches_braindecode_fixed_length_windows():
    from braindecode.datasets import BaseConcatDataset, RawDataset
    from braindecode.preprocessing import create_fixed_length_windows

    n_times = 1234
    info = mne.create_info(129, 100.0, "eeg")
    raw = mne.io.RawArray(np.zeros((129, n_times)), info, verbose="error")
    ds = BaseConcatDataset([RawDataset(raw, description={"subject": "A"})])
    win = create_fixed_length_windows(ds, window_size_samples=400, window_stride_samples=200,
                                      drop_last_window=True, preload=False)
    ref_starts = win.datasets[0].metadata["i_start_in_trial"].to_numpy()
    w = Challenge2Recipe().make_windows(n_times, 100.0, 129, _rec(), None)
    np.testing.assert_array_equal(w.starts, ref_starts)
    assert set(w.coords) >= {"externalizing", "p_factor", "attention", "internalizing", "age",
                             "sex", "target", "onset"}
    assert np.all(w.coords["target"] == 0.5)
    assert list(w.coords["sex"][:1]) == ["F"]


@settings(max_examples=50, deadline=None)
@given(n_times=st.integers(0, 5000), window_s=st.floats(0.1, 8.0),
       stride_s=st.floats(0.1, 8.0))
def test_fixed_windows_invariants(n_times, window_s, stride_s):
    r = FixedRecipe(window_s=window_s, stride_s=stride_s)
    w_samples = r.window_samples(100.0)
    if n_times < w_samples or w_samples < 1:
        with pytest.raises(RecordingError, match="too short"):
            r.make_windows(n_times, 100.0, 4, _rec(), None)
        return
    w = r.make_windows(n_times, 100.0, 4, _rec(), None)
    assert w.starts[0] == 0
    assert np.all(w.starts + w_samples <= n_times)
    stride = round(stride_s * 100)
    assert w.starts[-1] + stride + w_samples > n_times  # the last full window is included
    assert np.all(np.diff(w.starts) == stride)
    assert np.all(np.isnan(w.coords["target"]))


# ------------------------------------------------------------- preprocessing

def test_steps_roundtrip_and_errors():
    steps = (PickChannels(("E1", "Cz")), Rereference("average"), BandPass(0.5, 50.0),
             Resample(100))
    assert steps_from_dicts(steps_to_dicts(steps)) == steps
    assert "Resample(sfreq=100.0)" in repr(steps[-1])
    with pytest.raises(ConfigError, match="l_freq < h_freq"):
        BandPass(50, 1)
    with pytest.raises(ConfigError, match="positive sfreq"):
        Resample(0)
    with pytest.raises(ConfigError, match="preprocessing kind"):
        step_from_dict({"kind": "fft"})


def test_steps_bring_500hz_to_challenge_form():
    rng = np.random.default_rng(0)
    info = mne.create_info(["E1", "E2", "Cz"], 500.0, "eeg")
    raw = mne.io.RawArray(rng.standard_normal((3, 5000)) * 1e-5, info, verbose="error")
    out = apply_steps(raw, (BandPass(0.5, 50.0), Resample(100.0), PickChannels(("Cz", "E1"))))
    assert out.info["sfreq"] == 100.0
    assert out.n_times == 1000
    assert out.ch_names == ["Cz", "E1"]
    assert out.info["highpass"] == pytest.approx(0.5)
    assert out.info["lowpass"] == pytest.approx(50.0)
    with pytest.raises(RecordingError, match="to pick"):
        PickChannels(("E99",)).apply(out)
