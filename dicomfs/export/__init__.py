"""Export on the side: a plan's package written as DICOM media with a DICOMDIR.

Writes DICOM with pydicom: copies of the sources, or, for a media profile
that allows one transfer syntax only, the same datasets encoded again (which
means decoding them with pydicom here; deflated data is inflated by the
parser's bounded inflater). May import ``dicom``, ``index`` and ``view``;
nothing else imports it but ``commands``.
"""

# The media profiles, here and not in ``media`` so that the command line can
# offer them without importing pydicom for every command.
BYTE_FOR_BYTE = "byte-for-byte"
GENERAL_PURPOSE = "general-purpose"
PROFILES = (BYTE_FOR_BYTE, GENERAL_PURPOSE)
