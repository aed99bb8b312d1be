"""dicomfs: index DICOM files by UID and mount them organized by what they reference."""

__version__ = "0.1.0"
