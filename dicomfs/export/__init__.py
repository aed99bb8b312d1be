"""Export on the side: a plan's package written as DICOM media with a DICOMDIR.

Writes DICOM with pydicom (reading stays in ``dicom``). May import
``dicom``, ``index`` and ``view``; nothing else imports it but ``commands``.
"""
