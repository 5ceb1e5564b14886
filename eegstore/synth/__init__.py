"""Synthetic HBN-format EEG laid over real HBN-EEG metadata.

:func:`synthesize` reads a folder of real HBN-EEG metadata (``participants.tsv``
and, per recording, ``*_eeg.json``, ``*_channels.tsv`` and ``*_events.tsv``;
default: the vendored R5 "mini" subjects, :data:`eegstore.data.MINI_R5_METADATA`)
and writes, for every recording it lists, a 100 Hz BDF file with 129 channels
(``E1`` ... ``E128`` and the flat reference ``Cz``), exactly
``round(RecordingDuration * 100)`` samples long, in the layout eegdash reads
offline (``OUT/EEG2025r5mini/`` for a metadata folder whose subjects all belong
to the official mini subset, else ``OUT/EEG2025r5/``).  The real events are
copied beside each file, so trial tables, targets and windows behave as on the
challenge data.

Signal model (all in µV, per recording ``x = A @ s + noise``):

* **background**: 64 latent sources with a ``1/f^b`` power spectrum
  (subject-specific ``b`` in 1.6-2.0, falling faster above ~15 Hz)
  band-limited to 0.5-45 Hz, mixed through
  local topographies whose layout is shared by all subjects (a common "head
  model", jittered and re-weighted per subject), plus an occipital alpha
  rhythm (subject-specific peak 8.5-11.5 Hz, stronger in ``RestingState``) and
  independent sensor noise; per-subject and per-channel gains vary.
* **RT effect** (``contrastChangeDetection`` only): for every trial with a
  stimulus and a response (:func:`eegdash.hbn.windows.build_trial_table`), a
  centro-parietal component ramps up from ``stimulus + rt_ramp_onset_s`` to its
  peak at the response and decays after it (Gaussian, ``rt_width_s``), with
  peak ``rt_amplitude_uv`` at the topography maximum.  Its latency inside the
  window ``[stimulus + 0.5 s, stimulus + 2.5 s)`` encodes ``rt_from_stimulus``.
* **externalizing effect**: a frontal beta source (Gaussian spectrum centred
  on 22 Hz, 3 Hz wide) present in every
  recording of a subject, with RMS ``externalizing_strength_uv *
  (externalizing_offset + externalizing)`` µV at the topography maximum
  (``externalizing`` missing: 0), i.e. its amplitude is linear in the score.

Both effects are far below the background on a single channel (single-trial,
per-channel SNR well below 1) but share one topography over many channels, so a
small multichannel CNN learns them.  Every recording gets its own random stream
derived from ``seed`` and its id (subject-level properties from ``seed`` and the
subject), so serial and parallel runs write identical bytes.

The parts: :mod:`eegstore.synth.model` (the signal model), :mod:`eegstore.synth.bdf`
(the BDF writer), :mod:`eegstore.synth.bids` (which recordings, and their BIDS files) and
:mod:`eegstore.synth.release` (:func:`synthesize` and the ``eegstore synth`` command).
"""

from eegstore.synth.bdf import write_bdf
from eegstore.synth.bids import dataset_dir_name
from eegstore.synth.model import (
    CHANNEL_NAMES,
    SFREQ,
    EffectParams,
    externalizing_topography,
    rt_topography,
)
from eegstore.synth.release import SynthReport, configure_parser, run, synthesize

__all__ = [
    "CHANNEL_NAMES",
    "SFREQ",
    "EffectParams",
    "SynthReport",
    "configure_parser",
    "dataset_dir_name",
    "externalizing_topography",
    "rt_topography",
    "run",
    "synthesize",
    "write_bdf",
]
