"""Reading DICOM: one file in, an instance with every reference edge or a typed rejection out.

Owns pydicom for reading, the plain records passed between layers
(``records``) and the UID grammar. It may import nothing of dicomfs but
``dicomfs.errors``: every other layer builds on these records.
"""
