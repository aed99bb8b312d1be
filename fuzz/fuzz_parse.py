"""Coverage-guided fuzzing of the parser with atheris (libFuzzer), run by hand.

    make fuzz                                  # installs atheris if missing, runs 60 s
    .venv/bin/python fuzz/fuzz_parse.py --seeds DIR      # write a seed corpus to DIR
    .venv/bin/python fuzz/fuzz_parse.py DIR -max_total_time=600 -artifact_prefix=crashes/

The property is the one the hypothesis tests check (reliability.md D5): any
bytes given to ``parse_bytes`` end in an ``Instance`` or a typed
``Rejection``, never another exception, within bounded time (libFuzzer's
``-timeout``) and memory (``-rss_limit_mb``). A crash leaves its input as a
libFuzzer artifact; copy it to ``tests/reliability/fuzz_regressions/`` and
the regression test there replays it in CI.

atheris is not a dependency of dicomfs: it is installed into the venv only
by ``make fuzz`` (wheels exist for CPython 3.11 on x86_64 Linux).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def write_seeds(folder: Path) -> int:
    """Small hostile and valid files (the reliability corpus) as starting inputs."""
    from dicomfs.demo import write_hostile_corpus

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        corpus = write_hostile_corpus(Path(scratch) / "corpus")
        count = 0
        for relative in sorted(corpus.expected):
            content = (corpus.root / relative).read_bytes()
            if len(content) > 64 * 1024:  # the bomb and the deep nesting: too slow per run
                continue
            (folder / relative.replace("/", "__")).write_bytes(content)
            count += 1
    (folder / "deflated.dcm").write_bytes(_deflated_seed())
    count += 1
    regressions = Path(__file__).resolve().parents[1] / "tests/reliability/fuzz_regressions"
    for path in sorted(regressions.glob("*.bin")):
        (folder / f"regression__{path.name}").write_bytes(path.read_bytes())
        count += 1
    return count


def _deflated_seed() -> bytes:
    """A small deflated file, so the inflate path is explored from the start."""
    import io

    from pydicom import dcmread
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from dicomfs.demo import ct_bytes

    ds = dcmread(io.BytesIO(ct_bytes("1.2.3.4", study_uid="1.2.3", series_uid="1.2.3.5")))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seeds":
        target = Path(sys.argv[2])
        print(f"wrote {write_seeds(target)} seed files to {target}")
        return

    import logging
    import warnings

    import atheris

    # pydicom warns (and logs) about every odd value: noise at 5,000 runs a second.
    warnings.simplefilter("ignore")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    with atheris.instrument_imports(include=["dicomfs", "pydicom"]):
        from dicomfs.dicom.parse import parse_bytes
        from dicomfs.dicom.records import Instance, Rejection

    def one_input(data: bytes) -> None:
        result = parse_bytes(data)
        if not isinstance(result, Instance | Rejection):
            raise TypeError(f"parse_bytes returned {type(result).__name__}")

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
