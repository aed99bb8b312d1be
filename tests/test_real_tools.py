"""Real RT software opening plan packages by path through a real mount (issue 5, part 2).

Each tool reads ``plans/<uid>/references/`` of a mounted index (the demo
patients and the real exports in shared/testdata/real) and must give the
same answer as when it reads the source files:

* dcmtk ``dcmdump`` dumps every file of the package identically;
* dcmtk ``storescu`` sends the whole ``references/`` folder to dcmtk's
  ``storescp`` on loopback and every object arrives;
* dicompyler-core's ``DicomParser`` reads structure names, the plan label and
  DVHs (``dvhcalc.get_dvh``) from the mount equal to those from the sources;
* plastimatch ``convert`` writes the same CT volume and structure masks from
  the mount as from a folder holding the source files;
* ``dicomfs export`` writes media whose DICOMDIR pydicom's FileSet and dcmtk's
  ``dcmdump`` read back, listing every package member.

No tool is mocked. dicompyler-core 0.5.6 (the newest on PyPI) does not import
under pydicom 3 (dicompyler-core issues 380 and 385, fixed upstream but not
released), so it runs in its own virtual environment with pydicom 2.4
(``.venv-dicompyler``, made by the set-up script, or
``$DICOMFS_DICOMPYLER_PYTHON``). A missing tool skips locally and fails in
CI (``CI=true``), like a mount that cannot come up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuse_helpers import mounted, public_dir
from pydicom import dcmread
from pydicom.fileset import FileSet
from side_python import python_with

from dicomfs.index import IndexReader, graph

UID_IN_NAME = re.compile(r"^[A-Z0-9]+_(?P<uid>[0-9.]+)\.dcm$")
DICOMPYLER_PROBE = "import dicompylercore.dicomparser, dicompylercore.dvhcalc"
# DCMTK keeps Nagle's algorithm on unless TCP_NODELAY=1: every C-STORE would wait ~90 ms.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _unavailable(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} must be installed in CI (scripts/setup.sh --test)")
    pytest.skip(f"{what} is not installed")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        _unavailable(f"{tool} ({'plastimatch' if tool == 'plastimatch' else 'dcmtk'})")
    assert path is not None
    return path


def dicompyler_python() -> str:
    return python_with(
        DICOMPYLER_PROBE,
        "DICOMFS_DICOMPYLER_PYTHON",
        ".venv-dicompyler",
        "dicompyler-core (PyPI, with pydicom 2.4)",
    )


# -- data: plans, their packages, and mounts ------------------------------------------


class Mounted:
    """One index mounted for the module, with the package of each plan under test."""

    def __init__(self, mountpoint: Path, index: Path, plans: list[str]) -> None:
        self.mountpoint = mountpoint
        self.index = index
        self.plans = plans
        reader = IndexReader(index)
        try:
            self.packages = {uid: graph.package(reader, uid) for uid in plans}
        finally:
            reader.close()

    def plan_dir(self, plan: str) -> Path:
        return self.mountpoint / "plans" / plan

    def references(self, plan: str) -> Path:
        return self.plan_dir(plan) / "references"

    def sources(self, plan: str) -> dict[str, Path]:
        """SOP UID -> source file for every member of references/."""
        return {m.sop_uid: Path(m.instance.file.path) for m in self.packages[plan].references}

    def plan_source(self, plan: str) -> Path:
        return Path(self.packages[plan].root.file.path)


def _mount(index: Path, plans: list[str], prefix: str) -> Iterator[Mounted]:
    folder = public_dir(prefix)
    mountpoint = folder / "mnt"
    mountpoint.mkdir()
    try:
        with mounted(mountpoint, index):
            yield Mounted(mountpoint, index, plans)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_mount(demo_set, demo_index: Path) -> Iterator[Mounted]:  # type: ignore[no-untyped-def]
    yield from _mount(demo_index, [p.plan_uid for p in demo_set.patients], "dicomfs-tools-demo-")


def real_plans(index: Path) -> list[str]:
    reader = IndexReader(index)
    try:
        return sorted(p.sop_uid for p in reader.plans())
    finally:
        reader.close()


def monaco_plan(index: Path) -> str:
    reader = IndexReader(index)
    try:
        [plan] = [p.sop_uid for p in reader.plans() if "monaco-tinyvmat" in p.file.path]
    finally:
        reader.close()
    return plan


@pytest.fixture(scope="module")
def real_mount(real_index: Path) -> Iterator[Mounted]:
    yield from _mount(real_index, real_plans(real_index), "dicomfs-tools-real-")


@pytest.fixture(params=["demo", "real"])
def any_mount(request: pytest.FixtureRequest) -> Mounted:
    return request.getfixturevalue(f"{request.param}_mount")  # type: ignore[no-any-return]


def uid_of(name: str) -> str:
    match = UID_IN_NAME.match(name)
    assert match is not None, name
    return match["uid"]


def run(args: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs
    )


# -- dcmtk: dcmdump -----------------------------------------------------------------------


@pytest.mark.fuse
def test_dcmdump_reads_every_file_of_each_package(any_mount: Mounted) -> None:
    dcmdump = need("dcmdump")
    for plan in any_mount.plans:
        names = sorted(os.listdir(any_mount.references(plan)))
        sources = any_mount.sources(plan)
        assert names and {uid_of(n) for n in names} == set(sources)
        pairs = [(any_mount.references(plan) / n, sources[uid_of(n)]) for n in names]
        pairs.append((any_mount.plan_dir(plan) / "plan.dcm", any_mount.plan_source(plan)))
        for via_mount, source in pairs:
            dumped = run([dcmdump, via_mount])
            assert dumped.returncode == 0, f"{via_mount}: {dumped.stderr}"
            assert dumped.stdout == run([dcmdump, source]).stdout, via_mount
            uid = plan if via_mount.name == "plan.dcm" else uid_of(via_mount.name)
            assert f"(0008,0018) UI [{uid}]" in dumped.stdout


# -- dcmtk: storescu -> storescp ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class StoreSCP:
    """dcmtk's storescp on a free loopback port, writing what it receives to ``out``."""

    def __init__(self, out: Path, aet: str = "DICOMFSTEST") -> None:
        self.out, self.aet = out, aet
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log = out.parent / f"{out.name}-storescp.log"

    def __enter__(self) -> StoreSCP:
        storescp = need("storescp")
        self.out.mkdir(parents=True, exist_ok=True)
        for _attempt in range(5):
            self.port = _free_port()
            with self.log.open("wb") as log:
                self.proc = subprocess.Popen(
                    [storescp, "--aetitle", self.aet, "--output-directory", str(self.out),
                     "+xa", str(self.port)],
                    stdout=log, stderr=log, env=DCMTK_ENV,
                )  # fmt: skip
            deadline = time.monotonic() + 15
            while self.proc.poll() is None and time.monotonic() < deadline:
                if _listening(self.port):
                    return self
                time.sleep(0.05)
            self._stop()  # port taken in between, or did not start: try another port
        raise AssertionError(f"storescp did not start:\n{self.log.read_text(errors='replace')}")

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __exit__(self, *exc: object) -> None:
        self._stop()


@pytest.mark.fuse
def test_storescu_sends_the_whole_references_folder(any_mount: Mounted, tmp_path: Path) -> None:
    storescu = need("storescu")
    for number, plan in enumerate(any_mount.plans):
        out = tmp_path / f"received-{number}"
        with StoreSCP(out) as scp:
            command = [storescu, "-aet", "DICOMFSSEND", "-aec", scp.aet, "-R", "+sd", "+r",
                       "127.0.0.1", scp.port, any_mount.references(plan)]  # fmt: skip
            sent = run(command, env=DCMTK_ENV)
        assert sent.returncode == 0, sent.stderr + scp.log.read_text(errors="replace")
        received = [dcmread(p, stop_before_pixels=True) for p in sorted(out.iterdir())]
        expected = set(any_mount.sources(plan))
        assert len(received) == len(expected)
        assert {str(ds.SOPInstanceUID) for ds in received} == expected


# -- dicompyler-core ------------------------------------------------------------------------

DICOMPYLER_SCRIPT = r"""
import json, sys
from dicompylercore import dicomparser, dvhcalc

job = json.loads(sys.argv[1])
rs = dicomparser.DicomParser(job["rs"])
structures = rs.GetStructures()
out = {
    "structures": {str(k): v["name"] for k, v in structures.items()},
    "plan": dicomparser.DicomParser(job["plan"]).GetPlan(),
    "doses": [],
    "dvh": {},
}
for number, dose in enumerate(job["doses"]):
    parsed = dicomparser.DicomParser(dose)
    out["doses"].append(str(parsed.ds.SOPInstanceUID))
    for roi in structures:
        dvh = dvhcalc.get_dvh(job["rs"], dose, roi)
        out["dvh"][f"{number}:{roi}"] = {
            "counts": [float(c) for c in dvh.counts],
            "bins": [float(b) for b in dvh.bins],
            "volume": float(dvh.volume),
            "max": float(dvh.max),
            "mean": float(dvh.mean),
        }
print(json.dumps(out))
"""


def dicompyler(python: str, rs: Path, plan: Path, doses: list[Path]) -> dict[str, object]:
    job = json.dumps({"rs": str(rs), "plan": str(plan), "doses": [str(d) for d in doses]})
    done = run([python, "-c", DICOMPYLER_SCRIPT, job])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _dicompyler_cases(mount: Mounted, plan: str) -> tuple[Path, Path, list[Path]]:
    """(RS, plan, doses) in the mount for ``plan``, in the order of the package."""
    refs = mount.references(plan)
    names = sorted(os.listdir(refs))
    [rs] = [refs / n for n in names if n.startswith("RTSTRUCT_")]
    doses = [refs / n for n in names if n.startswith("RTDOSE_")]
    return rs, mount.plan_dir(plan) / "plan.dcm", doses


@pytest.mark.fuse
@pytest.mark.parametrize("which", ["demo", "monaco"])
def test_dicompyler_core_reads_the_package_by_path(
    which: str, request: pytest.FixtureRequest
) -> None:
    python = dicompyler_python()
    mount: Mounted = request.getfixturevalue("demo_mount" if which == "demo" else "real_mount")
    plans = mount.plans if which == "demo" else [monaco_plan(mount.index)]
    for plan in plans:
        rs, plan_path, doses = _dicompyler_cases(mount, plan)
        sources = mount.sources(plan)
        via_mount = dicompyler(python, rs, plan_path, doses)
        from_sources = dicompyler(
            python,
            sources[uid_of(rs.name)],
            mount.plan_source(plan),
            [sources[uid_of(d.name)] for d in doses],
        )
        assert via_mount == from_sources

        source_rs = dcmread(sources[uid_of(rs.name)], force=True)
        names = {str(r.ROINumber): str(r.ROIName) for r in source_rs.StructureSetROISequence}
        assert via_mount["structures"] == names
        source_plan = dcmread(mount.plan_source(plan), force=True, stop_before_pixels=True)
        assert via_mount["plan"]["label"] == source_plan.RTPlanLabel  # type: ignore[index]
        assert via_mount["doses"] == [uid_of(d.name) for d in doses]
        if which == "demo":
            # every dose of the demo covers the PTV: a real DVH, not an empty one
            assert doses
            dvh = via_mount["dvh"]
            assert isinstance(dvh, dict) and len(dvh) == len(doses) * len(names)
            ptv = next(k for k, v in names.items() if v == "PTV")
            assert all(dvh[f"{n}:{ptv}"]["max"] > 0 for n in range(len(doses)))
        else:
            assert doses == []  # the Monaco export holds no dose: names and label only


# -- plastimatch ---------------------------------------------------------------------------


def _plastimatch(plastimatch: str, source: Path, out: Path) -> dict[str, bytes]:
    out.mkdir(parents=True)
    done = run(
        [plastimatch, "convert", "--input", source, "--output-img", out / "ct.nrrd",
         "--output-prefix", f"{out / 'structures'}/"],
        cwd=out,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert "ct.nrrd" in files, done.stdout
    return files


@pytest.mark.fuse
@pytest.mark.parametrize("which", ["demo", "monaco"])
def test_plastimatch_converts_the_package_as_from_its_sources(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    plastimatch = need("plastimatch")
    mount: Mounted = request.getfixturevalue("demo_mount" if which == "demo" else "real_mount")
    plans = mount.plans if which == "demo" else [monaco_plan(mount.index)]
    for number, plan in enumerate(plans):
        folder = tmp_path / f"sources-{number}"
        folder.mkdir()
        sources = mount.sources(plan)
        for uid, path in sources.items():
            shutil.copyfile(path, folder / f"{uid}.dcm")
        via_mount = _plastimatch(plastimatch, mount.references(plan), tmp_path / f"mnt-{number}")
        from_sources = _plastimatch(plastimatch, folder, tmp_path / f"src-{number}")
        assert via_mount == from_sources  # same files, byte for byte

        reader = IndexReader(mount.index)
        try:
            members = [reader.instance(uid) for uid in sources]
        finally:
            reader.close()
        cts = [m for m in members if m is not None and m.modality == "CT"]
        [rs] = [m for m in members if m is not None and m.modality == "RTSTRUCT"]
        first_ct = dcmread(cts[0].file.path, stop_before_pixels=True, force=True)
        header = via_mount["ct.nrrd"].split(b"\n\n", 1)[0].decode()
        assert f"sizes: {first_ct.Columns} {first_ct.Rows} {len(cts)}" in header
        roi_names = {
            str(r.ROIName) for r in dcmread(rs.file.path, force=True).StructureSetROISequence
        }
        masks = {Path(name).stem for name in via_mount if name.startswith("structures/")}
        assert masks == roi_names


# -- dicomfs export: DICOMDIR read back by pydicom and dcmdump --------------------------------


@pytest.mark.parametrize("which", ["demo", "real"])
def test_export_dicomdir_reads_back_in_pydicom_and_dcmtk(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    dcmdump, dcmftest = need("dcmdump"), need("dcmftest")
    index: Path = request.getfixturevalue(f"{which}_index")
    if which == "demo":
        plans = [p.plan_uid for p in request.getfixturevalue("demo_set").patients]
    else:
        plans = real_plans(index)
    reader = IndexReader(index)
    try:
        packages = {plan: graph.package(reader, plan) for plan in plans}
    finally:
        reader.close()
    for number, plan in enumerate(plans):
        dest = tmp_path / f"media-{number}"
        done = run([sys.executable, "-m", "dicomfs", "export", plan, dest, "--index", index])
        assert done.returncode == 0, done.stdout + done.stderr
        expected = {plan, *(m.sop_uid for m in packages[plan].references)}

        fs = FileSet(dest / "DICOMDIR")
        assert {str(i.SOPInstanceUID) for i in fs} == expected
        assert len(fs) == len(expected)
        for instance in fs:
            assert dcmread(instance.path, stop_before_pixels=True).SOPInstanceUID == (
                instance.SOPInstanceUID
            )

        dumped = run([dcmdump, dest / "DICOMDIR"])
        assert dumped.returncode == 0, dumped.stderr
        listed = re.findall(r"^\s*\(0004,1511\) UI \[([0-9.]+)\]", dumped.stdout, re.M)
        assert sorted(listed) == sorted(expected)
        file_ids = re.findall(r"^\s*\(0004,1500\) CS \[([^\]]+)\]", dumped.stdout, re.M)
        assert len(file_ids) == len(expected)
        paths = [dest.joinpath(*file_id.split("\\")) for file_id in file_ids]
        checked = run([dcmftest, *paths])
        assert checked.returncode == 0, checked.stdout
        assert checked.stdout.count("yes: ") == len(expected), checked.stdout
