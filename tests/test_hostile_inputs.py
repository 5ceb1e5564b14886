"""Hostile inputs: a damaged copy of the synthetic release is built; each bad recording is
skipped with a precise reason, the good ones are built, and nothing outside the store changes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest

from eegstore.build import build_store
from eegstore.errors import BuildError
from eegstore.sources import Recording, discover_recordings
from eegstore.store import open_store, str_values
from eegstore.synth import write_bdf
from eegstore.verify import verify_store

pytestmark = pytest.mark.timeout(300)
TASK = "contrastChangeDetection"


@pytest.fixture(scope="module")
def hostile_cluster():
    """A one-thread Dask cluster inside the test process (no worker start-up cost)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0", silence_logs=40) as cluster, \
            Client(cluster) as client:
        yield client


def _stem(subject: str, run: int) -> str:
    return f"sub-{subject}_task-{TASK}_run-{run}"


def _clone_run(eeg_dir: Path, subject: str, src: int, dst: int, *, skip: tuple[str, ...] = ()
               ) -> dict[str, Path]:
    """Copy run ``src``'s files (signal + sidecars) to run ``dst``; return them by suffix."""
    out = {}
    for f in eeg_dir.glob(f"{_stem(subject, src)}_*"):
        suffix = f.name[len(_stem(subject, src)) + 1:]
        if suffix in skip:
            continue
        target = eeg_dir / f"{_stem(subject, dst)}_{suffix}"
        shutil.copyfile(f, target)
        out[suffix] = target
    return out


def _snapshot(root: Path, exclude: Path | None = None) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if exclude is not None and (d == exclude or exclude in d.parents):
            dirnames[:] = []
            continue
        for name in [*filenames, *dirnames]:
            p = d / name
            if exclude is not None and p == exclude:
                continue
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mtime_ns, st.st_size if p.is_file() else 0)
    return out


@pytest.fixture(scope="module")
def corpus(synth_mini_ccd: Path, tmp_path_factory) -> tuple[Path, str, dict[str, str]]:
    """Subject 1's three good CCD runs plus damaged runs 4..14; returns (root, subject,
    {run id -> expected reason fragment})."""
    src_root = synth_mini_ccd / "EEG2025r5mini"
    subject = sorted(p.name[4:] for p in src_root.glob("sub-*"))[0]
    root = tmp_path_factory.mktemp("hostile") / "bids"
    shutil.copytree(src_root, root, ignore=lambda d, names: [
        n for n in names if Path(d) == src_root and n.startswith("sub-")
        and n != f"sub-{subject}"])
    eeg = root / f"sub-{subject}" / "eeg"
    raw = mne.io.read_raw(eeg / f"{_stem(subject, 1)}_eeg.bdf", preload=True, verbose="error")
    data_uv = raw.get_data() * 1e6
    sfreq = raw.info["sfreq"]
    expected: dict[str, str] = {}

    def rid(run: int) -> str:
        return f"sub-{subject}_task-{TASK}_run-{run}"

    # 4: truncated BDF (half of its bytes)
    f = _clone_run(eeg, subject, 1, 4)["eeg.bdf"]
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    expected[rid(4)] = "truncated file"
    # 5: zero-byte file
    _clone_run(eeg, subject, 1, 5)["eeg.bdf"].write_bytes(b"")
    expected[rid(5)] = "unreadable recording"
    # 6: 64 channels (sidecars agree with the file), the store holds 129
    files = _clone_run(eeg, subject, 1, 6)
    write_bdf(files["eeg.bdf"], data_uv[:64], sfreq, raw.ch_names[:64])
    ch = pd.read_csv(files["channels.tsv"], sep="\t")
    ch.iloc[:64].to_csv(files["channels.tsv"], sep="\t", index=False)
    expected[rid(6)] = "got 64"
    # 7, 8: NaN and Inf stretches (FIF; BDF cannot hold them)
    for run, bad in ((7, np.nan), (8, np.inf)):
        files = _clone_run(eeg, subject, 1, run, skip=("eeg.bdf",))
        r = raw.copy()
        r._data[3:9, 2000:2300] = bad
        r.save(eeg / f"{_stem(subject, run)}_eeg.fif", verbose="error")
        expected[rid(run)] = "NaN/Inf samples"
    # 9: the file is at 250 Hz, the sidecar says 100 Hz
    files = _clone_run(eeg, subject, 1, 9)
    write_bdf(files["eeg.bdf"], np.repeat(data_uv, 5, axis=1)[:, ::2], 250.0, raw.ch_names)
    expected[rid(9)] = "got 250 Hz"
    # 10: no events.tsv
    _clone_run(eeg, subject, 1, 10, skip=("events.tsv",))
    expected[rid(10)] = "missing events"
    # 11: a non-numeric onset
    files = _clone_run(eeg, subject, 1, 11)
    ev = pd.read_csv(files["events.tsv"], sep="\t", dtype=str)
    ev.loc[4, "onset"] = "twelve"
    ev.to_csv(files["events.tsv"], sep="\t", index=False)
    expected[rid(11)] = "garbled events"
    # 12: unknown event values only
    files = _clone_run(eeg, subject, 1, 12)
    ev = pd.read_csv(files["events.tsv"], sep="\t", dtype=str)
    ev["value"] = "mystery_event"
    ev.to_csv(files["events.tsv"], sep="\t", index=False)
    expected[rid(12)] = "no usable trials"
    # 13: a CCD run without any button press
    files = _clone_run(eeg, subject, 1, 13)
    ev = pd.read_csv(files["events.tsv"], sep="\t", dtype=str)
    ev[~ev["value"].str.contains("buttonPress")].to_csv(files["events.tsv"], sep="\t",
                                                        index=False)
    expected[rid(13)] = "no usable trials"
    # 14: events.tsv that is not a table at all
    files = _clone_run(eeg, subject, 1, 14)
    files["events.tsv"].write_bytes(b"\x00\xff\xfe garbage \x00")
    expected[rid(14)] = "events"
    # a folder whose subject label tries to climb out of the source
    (root / "sub-..").mkdir()
    (root / "sub-.." / "eeg").mkdir()
    shutil.copyfile(eeg / f"{_stem(subject, 1)}_eeg.bdf",
                    root / "sub-.." / "eeg" / f"sub-.._task-{TASK}_run-1_eeg.bdf")
    return root, subject, expected


def test_each_bad_recording_is_skipped_with_its_reason(corpus, hostile_cluster, tmp_path):
    root, subject, expected = corpus
    work = tmp_path / "work"
    work.mkdir()
    (work / "bystander.txt").write_text("untouched")
    before_src = _snapshot(root)
    store = work / "s.zarr"
    before_work = _snapshot(work)
    report = build_store(str(root), store, "challenge1", scheduler=hostile_cluster,
                         chunk_windows=16, progress=False)
    skipped = report.skipped
    good = {f"sub-{subject}_task-{TASK}_run-{r}" for r in (1, 2, 3)}
    assert report.n_ok == 3 and set(skipped) == set(expected), skipped
    for rec_id, fragment in expected.items():
        assert fragment in skipped[rec_id], (rec_id, skipped[rec_id])
    ds = open_store(store)
    assert set(str_values(ds.recording.values)) == good
    status = dict(zip(str_values(ds.recordings.values), str_values(ds.recording_status.values),
                      strict=True))
    reasons = dict(zip(str_values(ds.recordings.values),
                       str_values(ds.recording_reason.values), strict=True))
    assert {k for k, v in status.items() if v == "ok"} == good
    assert all(reasons[k] == skipped[k] for k in expected)
    assert verify_store(store).ok
    # nothing outside the store changed: the source tree and the store's parent folder
    assert _snapshot(root) == before_src
    after_work = _snapshot(work, exclude=store)
    assert after_work == before_work
    # the good windows equal those of a build of the pristine good runs alone
    clean = tmp_path / "clean.zarr"
    recs = [r for r in discover_recordings(str(root)) if r.id in good]
    build_store("unused", clean, "challenge1", recordings=recs, scheduler=hostile_cluster,
                chunk_windows=16, progress=False)
    np.testing.assert_array_equal(open_store(clean).eeg.values, ds.eeg.values)


def test_duplicates_and_climbing_subject_ids(corpus, hostile_cluster, tmp_path):
    """Duplicated recordings are skipped as such; a subject id with ``../`` is only a label."""
    root, _subject, _ = corpus
    recs = [r for r in discover_recordings(str(root)) if r.run in ("1", "2")]
    assert all(".." not in r.subject for r in recs)  # the sub-.. folder is not a recording
    dup = Recording.from_dict({**recs[0].to_dict(), "path": recs[0].path})
    evil = Recording.from_dict({**recs[1].to_dict(), "subject": "../../../escape",
                                "run": "../x"})
    assert "/" not in evil.id and ".." not in evil.id
    work = tmp_path / "work"
    work.mkdir()
    before = _snapshot(tmp_path)
    store = work / "s.zarr"
    report = build_store("unused", store, "challenge1", recordings=[*recs, dup, evil],
                         scheduler=hostile_cluster, chunk_windows=16, progress=False)
    assert report.n_ok == 3, report.skipped
    [(dup_id, reason)] = report.skipped.items()
    assert dup_id.endswith("~dup1") and "duplicate recording" in reason
    ds = open_store(store)
    assert "../../../escape" in set(str_values(ds.subject.values))
    after = _snapshot(tmp_path, exclude=store)
    assert after == {k: v for k, v in before.items() if k != "work"} | {"work": after["work"]}
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()
    assert sorted(p.name for p in work.iterdir()) == ["s.zarr"]
    assert verify_store(store).ok


def test_duplicate_files_on_disk_are_skipped_not_fatal(corpus, hostile_cluster, tmp_path):
    """The same recording twice on disk (BDF and FIF): one is built, the other skipped."""
    root, subject, _ = corpus
    src = tmp_path / "dup"
    shutil.copytree(root, src, ignore=shutil.ignore_patterns("*run-[4-9]_*", "*run-1[0-9]_*",
                                                             "sub-.."))
    eeg = src / f"sub-{subject}" / "eeg"
    raw = mne.io.read_raw(eeg / f"{_stem(subject, 2)}_eeg.bdf", preload=True, verbose="error")
    raw.save(eeg / f"{_stem(subject, 2)}_eeg.fif", verbose="error")
    report = build_store(str(src), tmp_path / "s.zarr", "challenge1",
                         scheduler=hostile_cluster, chunk_windows=16, progress=False)
    assert report.n_ok == 3
    [(dup_id, reason)] = report.skipped.items()
    assert dup_id.startswith(f"sub-{subject}_task-{TASK}_run-2~dup")
    assert "duplicate recording" in reason and "run-2_eeg.fif" in reason, reason


def test_participants_without_the_target_column_is_a_clear_error(corpus, hostile_cluster,
                                                                  tmp_path):
    root, _subject, _ = corpus
    src = tmp_path / "notarget"
    shutil.copytree(root, src, ignore=shutil.ignore_patterns("*run-[2-9]_*", "*run-1[0-9]_*",
                                                             "sub-.."))
    tsv = src / "participants.tsv"
    df = pd.read_csv(tsv, sep="\t", dtype=str)
    df.drop(columns=["externalizing"]).to_csv(tsv, sep="\t", index=False)
    before = _snapshot(tmp_path)
    with pytest.raises(BuildError, match="missing target: expected externalizing"):
        build_store(str(src), tmp_path / "c2.zarr", "challenge2", scheduler=hostile_cluster,
                    progress=False)
    # no store is left behind, and the source is untouched
    assert not (tmp_path / "c2.zarr" / "_staging").exists()
    assert not (tmp_path / "c2.zarr" / "zarr.json").exists()
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("c2.zarr")} == before


def test_metadata_is_never_evaluated(corpus, hostile_cluster, tmp_path, monkeypatch):
    """Python-looking metadata stays text: no eval/exec/pickle on the build path."""
    import builtins

    root, subject, _ = corpus
    src = tmp_path / "evalme"
    shutil.copytree(root, src, ignore=shutil.ignore_patterns("*run-[2-9]_*", "*run-1[0-9]_*",
                                                             "sub-.."))
    tsv = src / "participants.tsv"
    df = pd.read_csv(tsv, sep="\t", dtype=str)
    payload = "__import__('os').system('touch PWNED')"
    df["sex"] = payload
    df.to_csv(tsv, sep="\t", index=False)
    side = src / f"sub-{subject}" / "eeg" / f"{_stem(subject, 1)}_eeg.json"
    meta = json.loads(side.read_text())
    meta["TaskDescription"] = payload
    side.write_text(json.dumps(meta))

    def refuse(*a, **k):
        raise AssertionError("eval/exec called on the build path")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.chdir(tmp_path)
    build_store(str(src), tmp_path / "e.zarr", "challenge2", scheduler=hostile_cluster,
                progress=False)
    ds = open_store(tmp_path / "e.zarr")
    assert set(str_values(ds.sex.values)) == {payload}
    assert not any(tmp_path.rglob("PWNED"))
