"""eegstore: labelled Zarr stores for EEG deep learning."""
__version__ = "0.1.0"
