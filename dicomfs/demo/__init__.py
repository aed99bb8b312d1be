"""Demo data, apart from the product: synthetic RT patients and hostile files.

Writes DICOM with pydicom for tests, benchmarks and ``dicomfs demo-data``.
May import only ``dicom`` (records, rejection kinds); only ``commands``
imports it.
"""
