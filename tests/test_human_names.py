"""Names people read (``view.human``), checked against issue 10's rules, not its code.

The rules, restated here independently of the module: a name is never
empty, is NFC, holds no ``/ \\ : * ? " < > |``, no control or format
character (NUL, newline, tab, DEL, bidi marks, zero-width space), does not
start with a dot or a space nor end with one, is not a Windows device name
(with or without an extension), fits in 255 bytes of UTF-8 without a broken
character, and is unique in its folder when compared as Windows compares
(without regard to case), whatever order the rows come in.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import random
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dicomfs.view import human

FORBIDDEN = frozenset('/\\:*?"<>|')
# Windows device names, "with any extension" (NUL.tar.gz is NUL), any case.
DEVICE = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(\..*)?", re.IGNORECASE)
UNPRINTABLE = ("Cc", "Cf", "Cs", "Co", "Cn")
PROPERTY = settings(
    max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

# Characters that break names, mixed into generated text so hypothesis meets them often.
HOSTILE_CHARS = [
    *FORBIDDEN,
    ".",
    " ",
    "\x00",
    "\n",
    "\r",
    "\t",
    "\x7f",
    "\x1b",
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u200f",  # RIGHT-TO-LEFT MARK
    "\u200b",  # ZERO WIDTH SPACE
    "\ufeff",  # BYTE ORDER MARK
    "\u2028",  # LINE SEPARATOR
    "\xa0",
    "\u0301",  # COMBINING ACUTE ACCENT
    "\u0308",  # COMBINING DIAERESIS
    "e",
    "u",
    "A",
    "é",
    "€",
    "😀",
    "ß",
]
HOSTILE_TEXT = st.text(
    alphabet=st.one_of(st.sampled_from(HOSTILE_CHARS), st.characters()), max_size=300
)


def violations(name: str) -> list[str]:
    """What is wrong with ``name`` as a file or folder name on Linux and Windows (empty: fine)."""
    problems = []
    if not name:
        return ["empty"]
    if name in (".", ".."):
        problems.append("dot name")
    if FORBIDDEN & set(name):
        problems.append(f"forbidden {sorted(FORBIDDEN & set(name))}")
    bad = sorted({f"U+{ord(c):04X}" for c in name if unicodedata.category(c) in UNPRINTABLE})
    if bad:
        problems.append(f"control or format characters {bad}")
    if name[0] in ". ":
        problems.append("leading dot or space")
    if name[-1] in ". ":
        problems.append("trailing dot or space")
    if DEVICE.fullmatch(name):
        problems.append("Windows device name")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        problems.append("not encodable as UTF-8")
    else:
        if size > 255:
            problems.append(f"{size} bytes")
    if not unicodedata.is_normalized("NFC", name):
        problems.append("not NFC")
    return problems


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


# -- one value --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Prostate", "Prostate"),
        ('a/b\\c:d*e?f"g<h>i|j', "a_b_c_d_e_f_g_h_i_j"),
        ("../x", "_x"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("Plan.", "Plan"),
        ("Plan . . .", "Plan"),
        ("Plan   ", "Plan"),
        (".hidden", "hidden"),
        (" . leading", "leading"),
        ("a\x00b", "ab"),
        ("a\nb\r\nc", "a b c"),
        ("a\tb", "a b"),
        ("a\x7fb\x1b", "ab"),
        ("\u202eFDP.exe", "FDP.exe"),
        ("left\u200fright", "leftright"),
        ("zero\u200bwidth", "zerowidth"),
        ("\ufeffBOM", "BOM"),
        ("many     spaces\t\t here", "many spaces here"),
        ("Mu\u0308ller", "Müller"),  # NFD in, NFC out
        ("CON", "_CON"),
        ("con", "_con"),
        ("con.dcm", "_con.dcm"),
        ("Nul.tar.gz", "_Nul.tar.gz"),
        ("AUX.txt", "_AUX.txt"),
        ("prn", "_prn"),
        ("COM1", "_COM1"),
        ("com9.x", "_com9.x"),
        ("LPT1", "_LPT1"),
        ("lpt9", "_lpt9"),
        ("CONSOLE", "CONSOLE"),
        ("COM10", "COM10"),
        ("CON 2024-03-05 APPROVED", "CON 2024-03-05 APPROVED"),
    ],
)
def test_safe_name_examples(raw: str, expected: str) -> None:
    name = human.safe_name(raw, "placeholder")
    assert name == expected
    assert violations(name) == []


@pytest.mark.parametrize("raw", ["", " ", "...", "..", ".", "../", "\x00\n\t", "\u200b\u202e", "."])
def test_nothing_left_gives_the_placeholder_or_a_safe_name(raw: str) -> None:
    name = human.safe_name(raw, "no-value")
    assert violations(name) == [], (raw, name)
    assert name not in ("", ".", "..")
    assert set(name) - {"_"} == set() or name == "no-value"


@pytest.mark.parametrize("reserved", ["CON", "PRN", "AUX", "NUL", "COM1", "COM5", "LPT1", "LPT9"])
@pytest.mark.parametrize("form", ["{}", "{}.dcm", "{}.tar.gz", "{} ", "{}."])
def test_reserved_device_names_in_any_case(reserved: str, form: str) -> None:
    for variant in (reserved, reserved.lower(), reserved.title()):
        name = human.safe_name(form.format(variant), "x")
        assert violations(name) == [], (variant, name)
        assert not DEVICE.fullmatch(name)


def test_reserved_only_with_the_extension_it_gets() -> None:
    assert human.safe_name("con", "x", extension=".dcm") == "_con.dcm"
    assert human.safe_name("plan", "x", extension=".dcm") == "plan.dcm"


@pytest.mark.parametrize("char", ["a", "é", "€", "😀", "e\u0301"])
@pytest.mark.parametrize("size", [10_000, 255, 254, 253, 256])
def test_long_values_are_cut_on_a_character_boundary(char: str, size: int) -> None:
    raw = char * size
    name = human.safe_name(raw, "x")
    assert violations(name) == []
    assert len(name.encode("utf-8")) <= 255
    composed = unicodedata.normalize("NFC", raw)
    assert composed.startswith(name)  # a prefix: never a broken or a changed character


def test_ten_kilobyte_values_stay_bounded_in_every_builder() -> None:
    big = "Label " * 1700  # 10 kB
    names = [
        human.plan_folder(big, "20240305", "APPROVED"),
        human.plan_folder("€" * 10_000, "20240305", big),
        human.study_folder("20240305", big),
        human.series_folder(big, 2**31 - 1, big),
        human.patient_folder(big, big, True),
        human.member_file(big, 7),
    ]
    for name in names:
        assert violations(name) == [], name
    # ASCII labels leave room for the date and status that make a plan folder readable.
    assert names[0].endswith(" 2024-03-05 APPROVED")
    assert names[2].startswith("2024-03-05 Label")


@PROPERTY
@given(HOSTILE_TEXT)
@example("e\u200b\u0301")  # a dropped character between a letter and its accent
def test_any_value_gives_a_safe_name(raw: str) -> None:
    # As the builders use it: values cleaned, then the assembled name made safe.
    assert violations(human.safe_name(human.clean(raw), "placeholder")) == []


@PROPERTY
@given(HOSTILE_TEXT, HOSTILE_TEXT, st.text(max_size=12), st.integers(-(2**31), 2**31 - 1))
@example("e\u200b\u0301", "", "", 1)
def test_every_builder_gives_safe_names(a: str, b: str, c: str, number: int) -> None:
    names = [
        human.patient_folder(a, b, False),
        human.patient_folder(a, b, True),
        human.plan_folder(a, c, b),
        human.study_folder(c, a),
        human.series_folder(a, number, b),
        human.series_folder(b, None, ""),
        human.member_file(a, number),
        human.member_file(b, None),
    ]
    for name in names:
        assert violations(name) == [], (name, violations(name))


@PROPERTY
@given(HOSTILE_TEXT)
def test_deterministic_and_idempotent(raw: str) -> None:
    name = human.safe_name(raw, "placeholder")
    assert human.safe_name(raw, "placeholder") == name
    if unicodedata.is_normalized("NFC", name):
        assert human.safe_name(name, "placeholder") == name


# -- dates -------------------------------------------------------------------------------


def test_iso_dates() -> None:
    assert human.iso_date("20240305") == "2024-03-05"
    for absent in ("", "2024035", "2024-03-05", "abcdefgh", "202403051"):
        assert human.iso_date(absent) == "no-date", absent
    assert human.iso_date("", "") == ""


def test_a_date_in_other_digits_is_no_date() -> None:
    """A DA value is ASCII digits (PS3.5 6.2); str.isdigit and regex \\d accept any script's.

    Fullwidth or Arabic-Indic digits made ``２０２４-０３-０５``: not an ISO
    date, it sorts after every real one, and the Arabic-Indic form carries
    bidi class AN into a folder name.
    """
    for digits in ("２０２４０３０５", "٢٠٢٤٠٣٠٥", "२०२४०३०५"):
        assert digits.isdigit()
        assert human.iso_date(digits) == "no-date", digits
        assert human.plan_folder("Boost", digits, "APPROVED") == "Boost no-date APPROVED"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.dates(), min_size=2, max_size=20))
def test_iso_dates_sort_as_the_dates_do(dates: list[datetime.date]) -> None:
    iso = {d: human.iso_date(f"{d.year:04d}{d.month:02d}{d.day:02d}") for d in dates}
    assert sorted(dates, key=iso.__getitem__) == sorted(dates)
    folders = {d: human.plan_folder("Plan", iso[d].replace("-", ""), "APPROVED") for d in dates}
    assert sorted(dates, key=folders.__getitem__) == sorted(dates)


# -- the builders ------------------------------------------------------------------------------


def test_patient_folder() -> None:
    assert human.patient_folder("PAT-1", "Müller^Jürgen", False) == "PAT-1"
    assert human.patient_folder("PAT-1", "Müller^Jürgen", True) == "PAT-1 Müller^Jürgen"
    nfd = unicodedata.normalize("NFD", "Müller^Jürgen")
    assert human.patient_folder("PAT-1", nfd, True) == "PAT-1 Müller^Jürgen"
    assert human.patient_folder("PAT-1", "Smith^^^", True) == "PAT-1 Smith"
    assert human.patient_folder("PAT-1", "", True) == "PAT-1"
    assert human.patient_folder("PAT-1", "^^^", True) == "PAT-1"
    assert human.patient_folder("", "Smith^John", False) == "no-patient-id"
    assert human.patient_folder("", "Smith^John", True) == "no-patient-id Smith^John"
    assert human.patient_folder("CON", "", False) == "_CON"
    assert human.patient_folder("con.dcm", "", False) == "_con.dcm"
    assert human.patient_folder("../x", "", False) == "_x"
    assert human.patient_folder("..", "", False) == "no-patient-id"


def test_plan_study_series_and_member_names() -> None:
    assert human.plan_folder("Boost", "20240305", "APPROVED") == "Boost 2024-03-05 APPROVED"
    assert human.plan_folder("", "20240305", "APPROVED") == "no label 2024-03-05 APPROVED"
    assert human.plan_folder("Boost", "", "APPROVED") == "Boost no-date APPROVED"
    assert human.plan_folder("Boost", "20240305", "") == "Boost 2024-03-05 no-approval"
    assert human.plan_folder("", "", "") == "no label no-date no-approval"
    assert human.plan_folder("Plan.", "20240305", "APPROVED") == "Plan 2024-03-05 APPROVED"
    assert human.plan_folder("\u200fRTL", "20240305", "APPROVED") == "RTL 2024-03-05 APPROVED"
    assert human.study_folder("20240305", "Thorax") == "2024-03-05 Thorax"
    assert human.study_folder("20240305", "") == "2024-03-05 no description"
    assert human.study_folder("", "Thorax") == "no-date Thorax"
    assert human.series_folder("CT", 2, "CT planning") == "CT 2 CT planning"
    assert human.series_folder("CT", None, "") == "CT"
    assert human.series_folder("", None, "") == "OT"
    assert human.member_file("CT", 7) == "CT-00007"
    assert human.member_file("CT", 123456) == "CT-123456"
    assert human.member_file("CT", None) == "CT-no-number"
    assert human.member_file("", 1) == "OT-00001"


def test_member_files_sort_by_instance_number() -> None:
    numbers = [0, 1, 2, 9, 10, 11, 99, 100, 1000, 99_999]
    names = [human.member_file("CT", n) for n in numbers]
    assert sorted(names) == names


# -- unique in a folder ------------------------------------------------------------------------


def test_unique_keeps_names_that_do_not_collide() -> None:
    out = human.unique([("Boost", "1.2.1", "a"), ("Prostate", "1.2.2", "b")])
    assert out == {"Boost": "a", "Prostate": "b"}


def test_two_plans_with_the_same_label_and_date_get_distinct_stable_names() -> None:
    name = human.plan_folder("Boost", "20240305", "APPROVED")
    rows = [(name, "1.2.840.1", "first"), (name, "1.2.840.2", "second")]
    out = human.unique(rows)
    assert len(out) == 2 and set(out.values()) == {"first", "second"}
    assert sorted(out) == sorted(
        [f"{name} ~{digest('1.2.840.1')}", f"{name} ~{digest('1.2.840.2')}"]
    )
    assert human.unique(list(reversed(rows))) == out  # not by the order rows come in
    for folder in out:
        assert violations(folder) == []


def test_names_that_differ_only_by_case_are_told_apart_for_windows() -> None:
    rows = [("Boost", "k1", 1), ("BOOST", "k2", 2), ("boost", "k3", 3), ("Other", "k4", 4)]
    out = human.unique(rows)
    assert len(out) == 4
    assert len({name.casefold() for name in out}) == 4
    assert out["Other"] == 4  # the sibling that does not collide keeps its name


def test_only_the_colliding_names_change_when_a_sibling_arrives() -> None:
    before = human.unique([("Boost", "k1", 1), ("Other", "k2", 2)])
    after = human.unique([("Boost", "k1", 1), ("Other", "k2", 2), ("boost", "k3", 3)])
    assert before == {"Boost": 1, "Other": 2}
    assert after["Other"] == 2
    assert {n for n, v in after.items() if v in (1, 3)} == {
        f"Boost ~{digest('k1')}",
        f"boost ~{digest('k3')}",
    }


def test_unique_with_an_extension() -> None:
    rows = [(human.member_file("CT", 1), "1.2.1", "a"), (human.member_file("CT", 1), "1.2.2", "b")]
    out = human.unique(rows, extension=".dcm")
    assert len(out) == 2
    for name in out:
        assert name.endswith(".dcm") and violations(name) == []


def test_a_long_colliding_name_still_fits_with_its_suffix() -> None:
    long = human.safe_name("€" * 200, "x")
    out = human.unique([(long, "k1", 1), (long, "k2", 2)])
    assert len(out) == 2
    for name in out:
        assert violations(name) == [], name


def test_a_value_that_looks_like_a_suffixed_name_does_not_hide_a_sibling() -> None:
    """Every row keeps a name of its own, even when a value mimics the `` ~hash`` suffix.

    ``A`` and ``a`` collide (Windows) and become ``A ~<h(k1)>`` and
    ``a ~<h(k2)>``; a third row whose value is literally ``A ~<h(k1)>``
    (a PatientID, a series description: anything a file may hold) must not
    take the first row's place.
    """
    mimic = f"A ~{digest('k1')}"
    out = human.unique([("A", "k1", 1), ("a", "k2", 2), (mimic, "k3", 3)])
    assert sorted(out.values()) == [1, 2, 3], out
    assert len({name.casefold() for name in out}) == 3


@PROPERTY
@given(
    st.lists(
        st.tuples(st.sampled_from(["Boost", "boost", "BOOST", "Plan", "plan", "CT", "ß", "SS"])),
        min_size=1,
        max_size=12,
    ),
    st.randoms(use_true_random=False),
)
def test_unique_never_loses_a_row_whatever_the_order(
    names: list[tuple[str]], rnd: random.Random
) -> None:
    rows = [(name, f"1.2.{i}", i) for i, (name,) in enumerate(names)]
    out = human.unique(rows)
    assert sorted(out.values()) == list(range(len(rows)))
    assert len({name.casefold() for name in out}) == len(rows)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert human.unique(shuffled) == out


def test_every_permutation_of_a_small_folder_gives_the_same_names() -> None:
    rows = [("Boost", "k1", 1), ("boost", "k2", 2), ("Boost", "k3", 3), ("Other", "k4", 4)]
    results = [human.unique(list(p)) for p in itertools.permutations(rows)]
    assert all(r == results[0] for r in results)
