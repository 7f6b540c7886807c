"""The simulated laboratories' HL7 v2.5.1 ORU^R01 results: parseable by an independent parser
(hl7apy), shaped like the real ELR samples, deterministic, with their defects where truth says."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hl7apy.parser import parse_message

from pipelines.simulate.context import Simulation, Window
from pipelines.simulate.country import build_country
from pipelines.simulate.hl7 import KNOWN_LOINC, write_hl7

pytestmark = pytest.mark.unit

# The real ELR samples: a copy in the test fixtures if there is one, else the shared folder the
# repository is checked out next to.
SAMPLE_DIRS = (
    Path(__file__).resolve().parents[1] / "fixtures" / "samples" / "hl7v2",
    Path(__file__).resolve().parents[3] / "shared" / "samples" / "hl7v2",
)
ENVELOPE = ("FHS", "BHS", "BTS", "FTS")
TIMESTAMP = re.compile(r"^\d{12}(\d{2})?[+-]\d{4}$")
# Collection to result, hours, as the module documents them.
TURNAROUND = {
    "70569-9": (0.25, 6),
    "51587-4": (1, 24),
    "85362-2": (24, 72),
    "20447-9": (168, 672),
    "625-4": (48, 120),
    "21503-8": (72, 240),
}
MALFORMED_RULES = {"message_complete", "msh10_present", "segment_valid", "test_code_present"}


@dataclass(frozen=True)
class Delivered:
    file: str
    position: int
    text: str


@dataclass
class Run:
    out: Path
    sim: Simulation
    counts: dict[str, int]
    messages: list[Delivered]
    defects: dict[tuple[str, int], dict[str, Any]]
    parsed: dict[tuple[str, int], Any]


def small_simulation(seed: int = 7) -> Simulation:
    country = build_country(seed, districts=2, regions=1, facilities_per_district=(3, 4))
    return Simulation(seed, country, Window("2026W5", 20))


def split_messages(text: str) -> list[str]:
    """Messages of a file, batch envelope removed; each keeps its CR segment terminators."""
    messages: list[list[str]] = []
    for segment in text.split("\r"):
        if not segment or segment[:3] in ENVELOPE:
            continue
        if segment.startswith("MSH|") or not messages:
            messages.append([segment])
        else:
            messages[-1].append(segment)
    return ["".join(s + "\r" for s in m) for m in messages]


def read_messages(out: Path) -> list[Delivered]:
    delivered = []
    for path in sorted(out.rglob("*.hl7")):
        relative = path.relative_to(out).as_posix()
        text = path.read_bytes().decode("ascii")
        for position, message in enumerate(split_messages(text), start=1):
            delivered.append(Delivered(relative, position, message))
    return delivered


def fields(message: str, name: str) -> list[list[str]]:
    """Raw fields of every segment called ``name`` (index = field number, MSH shifted)."""
    found = []
    for segment in message.split("\r"):
        if segment.startswith(name + "|"):
            values = segment.split("|")
            found.append(["MSH", "|", *values[1:]] if name == "MSH" else values)
    return found


def field(message: str, name: str, number: int) -> str:
    """A raw field of the first ``name`` segment; empty when the segment or field is absent."""
    found = fields(message, name)
    if not found or number >= len(found[0]):
        return ""
    return found[0][number]


def hl7_time(value: str) -> datetime:
    return datetime.strptime(value[:12], "%Y%m%d%H%M")


def unescape(text: str) -> str:
    table = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}
    return re.sub(r"\\([FSTRE])\\", lambda m: table[m.group(1)], text)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("hl7")
    sim = small_simulation()
    counts = write_hl7(sim, out)
    messages = read_messages(out)
    defects = {
        (d["record"]["file"], d["record"]["position"]): d
        for d in sim.truth.defects
        if d["source"] == "hl7"
    }
    parsed = {}
    for m in messages:
        if defects.get((m.file, m.position), {}).get("expected_rule") in MALFORMED_RULES:
            continue
        parsed[(m.file, m.position)] = parse_message(m.text, find_groups=False)
    return Run(out, sim, counts, messages, defects, parsed)


def clean(run: Run) -> list[Delivered]:
    return [m for m in run.messages if (m.file, m.position) not in run.defects]


def test_layout_and_counts(run: Run) -> None:
    files = sorted(p.relative_to(run.out).as_posix() for p in run.out.rglob("*") if p.is_file())
    labs = sorted(f.code for f in run.sim.country.facilities if f.has_lab)
    batches = [f for f in files if f.startswith("hl7/batches/")]
    singles = [f for f in files if f.startswith("hl7/messages/")]
    assert len(batches) + len(singles) == len(files) == run.counts["files"]
    # Every lab has a batch file for every week but the last four, even an empty one.
    assert len(batches) == run.counts["batch_files"] == len(labs) * (20 - 4)
    for path in batches:
        assert re.fullmatch(r"hl7/batches/DL_D\d{3}_DH01/20\d{2}W\d{2}\.hl7", path), path
    for path in singles:
        lab, name = path.split("/")[2:]
        assert lab in labs
        (message,) = split_messages((run.out / path).read_bytes().decode("ascii"))
        msh10 = field(message, "MSH", 10)
        if (path, 1) not in run.defects or run.defects[(path, 1)]["expected_rule"] != (
            "msh10_present"
        ):
            assert name in (f"{msh10}.hl7", f"{msh10}.2.hl7")
    for path in files:
        raw = (run.out / path).read_bytes()
        assert b"\n" not in raw and raw.endswith(b"\r")
    assert run.counts["messages"] + run.counts["duplicates"] == len(run.messages)
    assert run.counts["labs"] == len(labs) == 2


def test_well_formed_messages_parse_with_hl7apy(run: Run) -> None:
    country = run.sim.country
    codes = {ou.code for ou in country.org_units}
    lab_codes = {f.code for f in country.facilities if f.has_lab}
    checked = 0
    for m in clean(run):
        msg = run.parsed[(m.file, m.position)]
        assert [s.name for s in msg.children][:5] == ["MSH", "SFT", "PID", "ORC", "OBR"]
        assert msg.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
        assert msg.msh.msh_11.to_er7() == "P" and msg.msh.msh_12.to_er7() == "2.5.1"
        assert msg.msh.msh_4.hd_2.value in lab_codes
        assert msg.msh.msh_10.value
        assert msg.orc.orc_21.xon_10.value in codes
        assert msg.obr.obr_4.to_er7().split("^")[2] == "LN"
        assert msg.spm.spm_4.to_er7().endswith("^SCT")
        obx = [s for s in msg.children if s.name == "OBX"]
        for segment in obx:
            code, _, system = segment.obx_3.to_er7().split("^")
            assert code in KNOWN_LOINC and system == "LN"
            assert segment.obx_2.value in ("CWE", "NM", "SN")
            assert segment.obx_11.value in ("F", "C")
        assert msg.obr.obr_25.value in ("F", "C", "X")
        assert bool(obx) == (msg.obr.obr_25.value != "X")
        checked += 1
    assert checked > 150


def test_messages_follow_the_real_samples_conventions(run: Run) -> None:
    folder = next((d for d in SAMPLE_DIRS if any(d.glob("*.hl7"))), None)
    if folder is None:
        pytest.skip(f"no HL7 v2 samples in {' or '.join(str(d) for d in SAMPLE_DIRS)}")
    sample_texts = {
        p.name: p.read_bytes().decode("ascii").replace("\n", "") for p in folder.glob("*.hl7")
    }
    samples = [m for text in sample_texts.values() for m in split_messages(text)]
    # Our splitter reads the real batch sample as its trailer says: BTS-1 counts messages.
    assert len(split_messages(sample_texts["realm-batch.hl7"])) == 2
    assert "BTS|2" in sample_texts["realm-batch.hl7"]
    nist = split_messages(sample_texts["nist_ORU_R01_2.5.1_SampleTestCase1.hl7"])[0]
    for message in (nist, clean(run)[0].text):
        assert message.startswith("MSH|^~\\&|")
    for message in [*samples, *(m.text for m in clean(run)[:50])]:
        assert field(message, "MSH", 9) == "ORU^R01^ORU_R01"
        assert field(message, "MSH", 12) == "2.5.1"
        for obx in fields(message, "OBX"):
            assert obx[3].split("^")[2] == "LN"
    for sample in samples:
        if "SPM|" in sample:
            assert "^SCT" in field(sample, "SPM", 4)
    for m in clean(run)[:50]:
        assert TIMESTAMP.match(field(m.text, "MSH", 7))
        assert TIMESTAMP.match(field(m.text, "OBR", 7))
        assert TIMESTAMP.match(field(m.text, "SPM", 17))
        # As in the NIST samples: OBX-14 is the collection time, OBX-19 the analysis time.
        if fields(m.text, "OBX"):
            assert field(m.text, "OBX", 14) == field(m.text, "OBR", 7)


def test_batch_trailers_count_the_messages(run: Run) -> None:
    for path in sorted(run.out.glob("hl7/batches/*/*.hl7")):
        segments = [s for s in path.read_bytes().decode("ascii").split("\r") if s]
        assert [s[:3] for s in segments[:2]] == ["FHS", "BHS"]
        assert [s[:3] for s in segments[-2:]] == ["BTS", "FTS"]
        messages = sum(1 for s in segments if s.startswith("MSH|"))
        assert segments[-2] == f"BTS|{messages}"
        assert segments[-1] == "FTS|1"


def test_malformed_messages_break_the_rule_truth_names(run: Run) -> None:
    by_place = {(m.file, m.position): m.text for m in run.messages}
    rules = Counter(d["expected_rule"] for d in run.defects.values())
    assert set(rules) == MALFORMED_RULES | {"loinc_known", "org_unit_known", "duplicate"}
    for (path, position), defect in run.defects.items():
        assert defect["entity"] == "oru_r01"
        text = by_place[(path, position)]
        rule = defect["expected_rule"]
        if rule in MALFORMED_RULES:
            assert defect["kind"] == "malformed_message"
        if rule == "segment_valid":
            with pytest.raises(Exception):  # noqa: B017 - any parser error will do
                parse_message(text, find_groups=False)
        elif rule == "message_complete":
            names = [s[:3] for s in text.split("\r") if s]
            assert "OBX" not in names and "SPM" not in names
        elif rule == "msh10_present":
            assert defect["record"]["msh10"] is None
            assert parse_message(text, find_groups=False).msh.msh_10.value == ""
        elif rule == "test_code_present":
            assert parse_message(text, find_groups=False).obx.obx_3.to_er7() == ""
        elif rule == "loinc_known":
            assert defect["kind"] == "unknown_code"
            assert field(text, "OBX", 3).split("^")[0] not in KNOWN_LOINC
        elif rule == "org_unit_known":
            codes = {ou.code for ou in run.sim.country.org_units}
            xon10 = field(text, "ORC", 21).split("^")[9]
            assert defect["kind"] == "unknown_code" and xon10 not in codes


def test_duplicates_are_exact_copies_of_an_earlier_delivery(run: Run) -> None:
    duplicates = [d for d in run.defects.values() if d["expected_rule"] == "duplicate"]
    assert len(duplicates) == run.counts["duplicates"] >= 1
    for defect in duplicates:
        record = defect["record"]
        copies = [m for m in run.messages if field(m.text, "MSH", 10) == record["msh10"]]
        assert len(copies) == 2 and copies[0].text == copies[1].text
        assert (record["file"], record["position"]) in {(c.file, c.position) for c in copies}


def test_turnaround_times_are_plausible(run: Run) -> None:
    seen: Counter[str] = Counter()
    for m in clean(run):
        collected = hl7_time(field(m.text, "OBR", 7))
        reported = hl7_time(field(m.text, "OBR", 22))
        sent = hl7_time(field(m.text, "MSH", 7))
        received = hl7_time(field(m.text, "SPM", 18))
        assert field(m.text, "SPM", 17) == field(m.text, "OBR", 7)
        assert collected <= received <= reported <= sent
        if field(m.text, "OBR", 25) != "F" or not fields(m.text, "OBX"):
            continue
        code = field(m.text, "OBR", 4).split("^")[0]
        low, high = TURNAROUND[code]
        hours = (reported - collected).total_seconds() / 3600
        assert low - 0.02 <= hours <= high + 0.02, (code, hours)
        seen[code] += 1
    assert set(seen) == set(TURNAROUND)


def test_rejected_specimens_carry_a_reason_and_no_result(run: Run) -> None:
    rejected = [m for m in clean(run) if field(m.text, "OBR", 25) == "X"]
    assert rejected
    for m in rejected:
        assert not fields(m.text, "OBX")
        assert field(m.text, "SPM", 20) == "N"
        code, _, table = field(m.text, "SPM", 21).split("^")
        assert table == "HL70490" and len(code) == 2


def test_corrections_are_new_messages_with_status_c(run: Run) -> None:
    corrections = run.sim.truth.notes["hl7_corrections"]
    assert corrections and len(corrections) == run.counts["corrections"]
    by_msh10 = {field(m.text, "MSH", 10): m.text for m in run.messages}
    for c in corrections:
        original, corrected = by_msh10[c["original_msh10"]], by_msh10[c["corrected_msh10"]]
        assert c["original_msh10"] != c["corrected_msh10"]
        assert field(original, "ORC", 3) == field(corrected, "ORC", 3)
        assert field(original, "ORC", 3).split("^")[0] == c["filler_order"]
        assert field(corrected, "OBR", 25) == "C" and field(corrected, "OBX", 11) == "C"
        assert field(original, "OBX", 11) == "F"
        assert field(original, "OBX", 5) == c["old_value"] != c["new_value"]
        assert field(corrected, "OBX", 5) == c["new_value"]
        assert field(corrected, "OBX", 3).split("^")[0] == c["test"]
        assert hl7_time(field(corrected, "MSH", 7)) > hl7_time(field(original, "MSH", 7))


def test_escaped_free_text_round_trips(run: Run) -> None:
    escapes = run.sim.truth.notes["hl7_escapes"]
    assert "".join(sorted({ch for e in escapes for ch in e["text"] if ch in "|^&~\\"})) == (
        "&\\^|~"
    )
    places = {(m.file, field(m.text, "MSH", 10)): (m.file, m.position) for m in run.messages}
    for e in escapes:
        msg = run.parsed[places[(e["file"], e["msh10"])]]
        notes = [s for s in msg.children if s.name == "NTE"]
        texts = [unescape(n.nte_3.to_er7()) for n in notes]
        assert e["text"] in texts
        # Escaping kept the field whole: NTE has exactly its three fields.
        assert all(len(n.to_er7().split("|")) == 4 for n in notes)


def test_patients_carry_synthetic_identifiers_on_purpose(run: Run) -> None:
    viral_load_patients: Counter[str] = Counter()
    for m in clean(run):
        pid = fields(m.text, "PID")[0]
        mrn, _, _, authority, kind = pid[3].split("~")[0].split("^")
        assert mrn and authority and kind == "MR"
        family, given = pid[5].split("^")[:2]
        assert family and given
        assert re.fullmatch(r"\d{8}", pid[7]) and pid[8] in ("F", "M")
        assert pid[11].split("^")[0].startswith("Plot ")
        if field(m.text, "OBR", 4).startswith("20447-9"):
            viral_load_patients[pid[3]] += 1
    assert any("^PRN^CP^" in fields(m.text, "PID")[0][13] for m in clean(run))
    # People on treatment are tested repeatedly: the same PID-3 recurs.
    assert max(viral_load_patients.values()) >= 2


def test_cholera_and_measles_positives_cluster(run: Run) -> None:
    clusters = run.sim.truth.notes["hl7_lab_clusters"]
    assert {c["disease"] for c in clusters} == {"cholera", "measles"}
    week_ids = run.sim.window.week_ids()
    code = {"cholera": "625-4", "measles": "21503-8"}
    for cluster in clusters:
        first = week_ids.index(cluster["start_week"])
        weeks = set(week_ids[first : first + cluster["weeks"]])
        inside = [0, 0]
        for m in clean(run):
            if not field(m.text, "OBX", 3).startswith(code[cluster["disease"]]):
                continue
            if field(m.text, "MSH", 4).split("^")[1] != cluster["lab"]:
                continue
            year, week, _ = hl7_time(field(m.text, "OBR", 7)).isocalendar()
            if f"{year}W{week}" in weeks:
                inside[0] += field(m.text, "OBX", 8) == "A"
                inside[1] += 1
        assert inside[1] >= 5 and inside[0] / inside[1] > 0.3, (cluster, inside)


def test_same_seed_gives_byte_identical_files(run: Run, tmp_path: Path) -> None:
    again = small_simulation()
    write_hl7(again, tmp_path / "same")
    other = small_simulation(seed=8)
    write_hl7(other, tmp_path / "other")

    def tree(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.hl7")}

    assert tree(tmp_path / "same") == tree(run.out)
    assert json.dumps(again.truth.to_json(), sort_keys=True) == json.dumps(
        run.sim.truth.to_json(), sort_keys=True
    )
    assert tree(tmp_path / "other") != tree(run.out)


@pytest.mark.slow
def test_default_country_is_bounded(tmp_path: Path) -> None:
    sim = Simulation(7, build_country(7), Window())
    counts = write_hl7(sim, tmp_path)  # its speed is measured by benchmarks/, not here
    assert 10_000 <= counts["messages"] <= 60_000
    assert counts["files"] <= 5_000
