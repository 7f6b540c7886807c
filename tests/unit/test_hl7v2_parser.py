"""Our HL7 v2 parser (connectors/hl7v2.py) on the real public samples and on variants derived
from them: separators and escapes, batches and their counts, line endings, repeated OBX set
ids, malformed messages (rejected with a reason, never an exception), MLLP framing, ACKs, and
the adapter's privacy preparation. hl7apy, an independent parser, is the oracle where one
helps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hl7apy.parser import parse_message as hl7apy_parse

from connectors import hl7v2
from connectors.hl7v2 import (
    Delivery,
    MllpFrameDecoder,
    MllpFrameError,
    Separators,
    ack_fields,
    build_ack,
    decode_bytes,
    frame_message,
    message_record,
    parse_message,
    parse_text,
    read_hl7_folder,
    result_records,
    segment_lines,
)
from pipelines.errors import ConfigError
from pipelines.privacy import Pseudonymiser
from pipelines.sources.hl7v2 import RESULTS, Hl7v2Adapter
from tests.conftest import SAMPLES

HL7_SAMPLES = SAMPLES / "hl7v2"
BAD_ENCODING = "MSH|^~&|"
"""The realm samples' MSH-2 lacks the escape character (the README calls the batch's second
message malformed on purpose; the single realm files share the defect)."""

# Every sample: its messages and, per message, the rule that rejects it (None: it parses).
SAMPLE_OUTCOMES: dict[str, list[str | None]] = {
    "cerner_lead.hl7": [None],
    "nist_ORU_R01_2.5.1_SampleTestCase1.hl7": [None],
    "nist_ORU_R01_2.5.1_SampleTestCase3.hl7": [None],
    "nist_ORU_R01_2.5.1_SampleTestCase4.hl7": [None],
    "nist_ORU_R01_2.5.1_SampleTestCase5.hl7": [None],
    "nist_ORU_R01_2.5.1_SampleTestCase6.hl7": [None],
    "realm-batch.hl7": [None, "segment_valid"],
    "realm-campylobacter-jejuni.hl7": ["segment_valid"],
    "realm-hepatitis-c-virus.hl7": ["segment_valid"],
    "realm-lead-laboratory-result.hl7": ["segment_valid"],
    "realm-minimal-message.hl7": ["segment_valid"],
}


def sample_text(name: str) -> str:
    return decode_bytes((HL7_SAMPLES / name).read_bytes())


def only_message(text: str) -> hl7v2.Hl7Message:
    messages, envelope = parse_text(text)
    assert len(messages) == 1 and not envelope
    return messages[0]


def fixed_encoding(text: str) -> str:
    return text.replace(BAD_ENCODING, "MSH|^~\\&|")


MINIMAL = "\r".join(
    [
        "MSH|^~\\&|LIS|LAB^LAB01^L|HP|MOH|20250301101500+0300||ORU^R01^ORU_R01|M-1|P|2.5.1",
        "PID|1||000123^^^FAC01^MR~900101-1^^^NIR^NI||Doe^Jane||19900101|F|||1 Main St^^Town||^PRN^CP^^255^712^3456789",
        "ORC|RE|FAC01-1^FAC01|25MR1^LAB01|||||||||||||||||Clinic^L^^^^DHIS2^XX^^^FAC01",
        "OBR|1|FAC01-1^FAC01|25MR1^LAB01|70569-9^Malaria RDT^LN|||202503010800+0300|||||||||||||||202503010915+0300|||F",
        "OBX|1|CWE|70569-9^Malaria RDT^LN||260415000^Not detected^SCT||Not detected|N|||F|||202503010800+0300",
        "SPM|1|FAC01-1&FAC01^25MR1&LAB01||122554006^Capillary blood specimen^SCT|||||||||||||202503010800+0300|202503010830+0300",
    ]
)


# --- the shared samples -------------------------------------------------------------------------
def test_every_sample_is_known() -> None:
    assert sorted(p.name for p in HL7_SAMPLES.glob("*.hl7")) == sorted(SAMPLE_OUTCOMES)


@pytest.mark.parametrize("name", sorted(SAMPLE_OUTCOMES))
def test_every_sample_parses_or_is_rejected_with_a_reason(name: str) -> None:
    messages, envelope = parse_text(sample_text(name))
    assert envelope == []
    assert [m.problem.rule if m.problem else None for m in messages] == SAMPLE_OUTCOMES[name]
    for message in messages:
        if message.problem is None:
            assert result_records(message), name
            continue
        assert result_records(message) == []
        problem = message.problem
        assert problem.location and problem.detail
        if message.segments[0].raw(2) == "^~&":
            assert problem.location == "MSH-2" and "'^~&'" in problem.detail and problem.reject


@pytest.mark.parametrize(
    "name",
    [
        "cerner_lead.hl7",
        "nist_ORU_R01_2.5.1_SampleTestCase1.hl7",
        "nist_ORU_R01_2.5.1_SampleTestCase3.hl7",
        "nist_ORU_R01_2.5.1_SampleTestCase4.hl7",
        "nist_ORU_R01_2.5.1_SampleTestCase5.hl7",
        "nist_ORU_R01_2.5.1_SampleTestCase6.hl7",
    ],
)
def test_accepted_samples_agree_with_hl7apy(name: str) -> None:
    text = sample_text(name)
    ours = result_records(only_message(text))
    theirs = hl7apy_parse(text.replace("\n", "").strip("\r"), find_groups=False)
    observations = [s for s in theirs.children if s.name == "OBX"]
    assert [(r["test_code"], r["value"]) for r in ours] == [
        (o.obx_3.obx_3_1.value, o.obx_5.value) for o in observations
    ]
    assert {r["message_control_id"] for r in ours} == {theirs.msh.msh_10.value}


def test_nist_lead_result_fields() -> None:
    message = only_message(sample_text("nist_ORU_R01_2.5.1_SampleTestCase1.hl7"))
    (record,) = result_records(message)
    assert record["message_control_id"] == "NIST-100929110701660"
    assert record["hl7_version"] == "2.5.1"
    assert (record["test_code"], record["test_system"]) == ("10368-9", "LN")
    assert (record["value_type"], record["value"], record["units"]) == ("NM", "50", "ug/dL")
    assert record["abnormal_flags"] == "H"
    assert record["result_status"] == "F" and record["order_status"] == "F"
    assert record["reference_range"] == "<9 mcg/dL:  Acceptable background lead exposure"
    assert record["filler_order_number"] == "9700123"
    assert record["order_test_code"] == "10368-9"
    assert record["collected_at"] == "200808151030-0700"
    assert record["results_reported_at"] == "200808181800-0700"
    assert record["observed_at"] == "200808151030-0700"
    assert record["ordering_facility_code"] == "1234"  # ORC-21 XON-10
    assert record["specimen_type_code"] == "122554006"
    assert record["pid3_identifiers"] == [{"id": "9817566735", "authority": "MPI", "type": "MR"}]
    assert record["pid7_birth_date"] == "20070526" and record["patient_sex"] == "M"
    assert record["segment_position"] == "6" and record["obx_index"] == "1"


def test_corrected_sample_keeps_its_status() -> None:
    (record,) = result_records(only_message(sample_text("nist_ORU_R01_2.5.1_SampleTestCase3.hl7")))
    assert (record["result_status"], record["order_status"], record["value"]) == ("C", "C", "25")


def test_sample_without_orc_has_no_ordering_facility() -> None:
    (record,) = result_records(only_message(sample_text("nist_ORU_R01_2.5.1_SampleTestCase5.hl7")))
    assert record["ordering_facility_code"] is None
    assert record["value"] == "850000"


def test_same_set_id_repeated_gives_distinct_keys() -> None:
    records = result_records(only_message(sample_text("nist_ORU_R01_2.5.1_SampleTestCase6.hl7")))
    assert [r["obx_set_id"] for r in records] == ["1", "1", "1"]
    assert [r["obx_index"] for r in records] == ["1", "2", "3"]
    keys = [tuple(r[k] for k in RESULTS.key) for r in records]
    assert len(set(keys)) == 3
    assert [r["test_code"] for r in records] == ["6331-3", "20995-1", "17576-0"]


def test_cerner_sample_with_spm_before_obx_and_trailing_lf() -> None:
    (record,) = result_records(only_message(sample_text("cerner_lead.hl7")))
    assert record["specimen_type_code"] == "122555007"
    assert record["ordering_facility_code"] == "123"
    assert record["units"] == "ug/dL"


def test_realm_batch_first_message_has_two_orders() -> None:
    messages, envelope = parse_text(sample_text("realm-batch.hl7"))
    assert envelope == [] and len(messages) == 2
    records = result_records(messages[0])
    assert [(r["order_test_code"], r["test_code"], r["segment_position"]) for r in records] == [
        ("625-4", "625-4", "8"),
        ("10368-9", "10368-9", "11"),
    ]
    assert [r["specimen_type_code"] for r in records] == ["119339001", "122554006"]
    assert records[0]["value"].startswith("66543000^Campylobacter jejuni^SCT")
    identifiers = records[0]["pid3_identifiers"]
    assert [i["id"] for i in identifiers] == ["36363636", "444333333"]
    second = messages[1]
    assert second.problem is not None and second.problem.location == "MSH-2"
    assert second.control_id == "1234567890"  # still named, so quarantine can say which


def test_realm_samples_parse_once_their_encoding_characters_are_repaired() -> None:
    minimal = only_message(fixed_encoding(sample_text("realm-minimal-message.hl7")))
    assert minimal.problem is None
    hepatitis = result_records(
        only_message(fixed_encoding(sample_text("realm-hepatitis-c-virus.hl7")))
    )
    # Two OBX follow the SPM (specimen observations): still results of the same order.
    assert [r["test_code"] for r in hepatitis] == ["5198-7", "35659-2", "11294-6"]
    # This sample's first OBX is two fields out of step (its SN value >^11.0 sits in OBX-7):
    # we read the fields where the standard puts them.
    assert hepatitis[0]["value"] is None and hepatitis[0]["reference_range"] == ">^11.0"
    assert hepatitis[1]["value"] == "29" and hepatitis[1]["units"] == "a"
    lead = only_message(fixed_encoding(sample_text("realm-lead-laboratory-result.hl7")))
    # A line break inside PID-16 splits it: the second half is not a segment.
    assert lead.problem is not None
    assert (lead.problem.rule, lead.problem.location) == ("segment_valid", "segment 4")


# --- separators and escapes ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        (
            "Repeat test advised \\F\\ clinician informed",
            "Repeat test advised | clinician informed",
        ),
        ("Ward 3 \\S\\ paediatric", "Ward 3 ^ paediatric"),
        ("Haemolysed \\T\\ lipaemic", "Haemolysed & lipaemic"),
        ("lot A12\\R\\B07", "lot A12~B07"),
        ("LAB\\E\\QC\\E\\2025", "LAB\\QC\\2025"),
        ("line one\\.br\\line two", "line one\nline two"),
        ("\\H\\bold\\N\\ text", "bold text"),
        ("caf\\XC3A9\\", "café"),
        ("unterminated \\F", "unterminated \\F"),
        ("unknown \\Q\\ kept", "unknown \\Q\\ kept"),
    ],
)
def test_escape_sequences_are_decoded(encoded: str, decoded: str) -> None:
    assert Separators().decode(encoded) == decoded


def test_encoding_round_trips() -> None:
    text = "a|b^c&d~e\\f\nnext"
    separators = Separators()
    assert separators.decode(separators.encode(text)) == text


def test_escaped_delimiters_do_not_split_components() -> None:
    text = MINIMAL.replace(
        "Not detected^SCT||Not detected", "Not detected^SCT||Neg \\S\\ ok \\T\\ fine"
    )
    (record,) = result_records(only_message(text))
    assert record["reference_range"] == "Neg ^ ok & fine"
    assert record["value"] == "260415000^Not detected^SCT"


def test_separators_come_from_msh1_and_msh2() -> None:
    custom = Separators(field="#", component="$", repetition="*", escape="@", subcomponent="%")
    lines = []
    for line in MINIMAL.split("\r"):
        line = line.replace("MSH|^~\\&|", "MSH#$*@%#")
        line = line.translate(str.maketrans({"|": "#", "^": "$", "~": "*", "&": "%"}))
        lines.append(line)
    text = "\r".join(lines).replace("Not detected#N", "a @F@ b @S@ c#N")
    message = only_message(text)
    assert message.separators == custom
    (record,) = result_records(message)
    assert record["test_code"] == "70569-9" and record["value"] == "260415000^Not detected^SCT"
    assert record["reference_range"] == "a # b $ c"
    assert [i["id"] for i in record["pid3_identifiers"]] == ["000123", "900101-1"]
    assert record["specimen_collected_at"] == "202503010800+0300"


def test_truth_escaped_comments_are_decoded() -> None:
    comments = [
        "Repeat test advised | clinician informed",
        "Ward 3 ^ paediatric outpatients",
        "Haemolysed & lipaemic; interpret with caution",
        "RDT lot A12~B07 used",
        "QC log ref LAB\\QC\\2025",
    ]
    encoded = [Separators().encode(c) for c in comments]
    text = MINIMAL.replace(
        "\rSPM", "".join(f"\rNTE|{n}|L|{e}" for n, e in enumerate(encoded, 1)) + "\rSPM"
    )
    (record,) = result_records(only_message(text))
    assert record["observation_comments"].split("\n") == comments


# --- line endings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"])
@pytest.mark.parametrize("terminated", [True, False])
def test_line_endings_and_final_terminator_do_not_matter(ending: str, terminated: bool) -> None:
    text = MINIMAL.replace("\r", ending) + (ending if terminated else "")
    (record,) = result_records(only_message(text))
    (reference,) = result_records(only_message(MINIMAL + "\r"))
    assert record == reference


def test_blank_lines_are_ignored() -> None:
    assert segment_lines("MSH|x\r\n\r\n  \rPID|1\n") == ["MSH|x", "PID|1"]


# --- batches ----------------------------------------------------------------------------------------
def batch(*messages: str, declared: int | None = None, batches: int | None = 1) -> str:
    count = len(messages) if declared is None else declared
    lines = ["FHS|^~\\&|LIS", "BHS|^~\\&|LIS", *messages, f"BTS|{count}"]
    if batches is not None:
        lines.append(f"FTS|{batches}")
    return "\r".join(lines) + "\r"


def test_batch_is_split_into_its_messages() -> None:
    second = MINIMAL.replace("|M-1|", "|M-2|")
    messages, envelope = parse_text(batch(MINIMAL, second))
    assert envelope == []
    assert [m.control_id for m in messages] == ["M-1", "M-2"]
    assert [m.index for m in messages] == [1, 2]
    assert all(m.problem is None for m in messages)


def test_empty_batch_is_fine() -> None:
    assert parse_text(batch()) == ([], [])


@pytest.mark.parametrize(
    ("text", "location"),
    [
        (batch(MINIMAL, declared=2), "BTS (line 9)"),
        (batch(MINIMAL, batches=2), "FTS (line 10)"),
        ("FHS|^~\\&\rBHS|^~\\&\r" + MINIMAL + "\r", "BHS (line 2)"),
    ],
)
def test_batch_counts_are_checked(text: str, location: str) -> None:
    messages, envelope = parse_text(text)
    assert [m.problem for m in messages] == [None]  # the message itself is fine
    assert envelope and envelope[0].rule == "batch_complete"
    assert envelope[0].location == location


def test_lines_before_the_first_msh_are_a_rejected_message() -> None:
    messages, _ = parse_text("garbage line\r" + MINIMAL)
    assert [m.problem.rule if m.problem else None for m in messages] == ["segment_valid", None]


# --- malformed messages ----------------------------------------------------------------------------
def replace_line(text: str, prefix: str, new: str | None) -> str:
    lines = [(new if line.startswith(prefix) else line) for line in text.split("\r")]
    return "\r".join(line for line in lines if line is not None)


@pytest.mark.parametrize(
    ("text", "rule", "location", "reject"),
    [
        (MINIMAL.split("\rOBX")[0][:-20], "message_complete", "OBR 1 (segment 4)", False),
        (MINIMAL.replace("|M-1|", "||"), "msh10_present", "MSH-10", False),
        (replace_line(MINIMAL, "ORC", "#@!%*?$=+;:#@!"), "segment_valid", "segment 3", False),
        (replace_line(MINIMAL, "PID", None), "message_complete", "PID", False),
        (MINIMAL.replace("ORU^R01^ORU_R01", "ADT^A01^ADT_A01"), "message_supported", "MSH-9", True),
        (MINIMAL.replace("|P|2.5.1", "|P|2.2"), "message_supported", "MSH-12", True),
        (MINIMAL.replace("MSH|^~\\&|", "MSH|^~&|"), "segment_valid", "MSH-2", True),
        ("PID|1||x\rOBR|1", "segment_valid", "segment 1", True),
    ],
)
def test_malformed_messages_are_flagged_not_raised(
    text: str, rule: str, location: str, reject: bool
) -> None:
    message = only_message(text)
    problem = message.problem
    assert problem is not None
    assert (problem.rule, problem.location, problem.reject) == (rule, location, reject)
    assert result_records(message) == []
    record = message_record(message, Delivery("f#1", "f#000001", "f"))
    assert record["parse_rule"] == rule and location in record["parse_problem"]


def test_the_garbage_line_is_never_quoted() -> None:
    broken = replace_line(MINIMAL, "PID", "Doe^Jane||19900101|F")
    message = only_message(broken)
    assert message.problem is not None and message.problem.rule == "segment_valid"
    record = message_record(message, Delivery("f#1", "f#000001", "f"))
    assert "Doe" not in json.dumps(record) and "19900101" not in json.dumps(record)


def test_rejected_specimen_without_obx_is_one_order_record() -> None:
    text = replace_line(MINIMAL, "OBX", None).replace(
        "202503010915+0300|||F", "202503010915+0300|||X"
    )
    text = text.replace(
        "202503010830+0300", "202503010830+0300||N|QS^Quantity not sufficient^HL70490"
    )
    (record,) = result_records(only_message(text))
    assert record["obx_index"] is None and record["test_code"] is None
    assert record["order_status"] == "X" and record["order_test_code"] == "70569-9"
    assert record["segment_position"] == "4"  # the OBR's position
    assert record["specimen_reject_reason_code"] == "QS"


def test_obx_before_any_obr_is_a_segment_problem() -> None:
    text = MINIMAL.replace("\rORC", "\rOBX|1|NM|1-8^x^LN||1||||||F\rORC")
    message = only_message(text)
    assert message.problem is not None and message.problem.rule == "segment_valid"


def test_local_code_in_first_triplet_prefers_the_loinc_alternate() -> None:
    text = MINIMAL.replace(
        "OBX|1|CWE|70569-9^Malaria RDT^LN|", "OBX|1|CWE|MAL^RDT^L^70569-9^Malaria RDT^LN|"
    )
    (record,) = result_records(only_message(text))
    assert (record["test_code"], record["test_system"]) == ("70569-9", "LN")


# --- file drops ---------------------------------------------------------------------------------
def test_folder_reader_groups_files_and_skips_unchanged_ones(tmp_path: Path) -> None:
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "M-1.hl7").write_text(MINIMAL, encoding="utf-8")
    (tmp_path / "lab" / "M-1.2.hl7").write_text(MINIMAL, encoding="utf-8")  # a re-delivery
    (tmp_path / "lab" / "week.hl7").write_text(
        batch(MINIMAL.replace("|M-1|", "|M-3|"), declared=3), encoding="utf-8"
    )
    (tmp_path / "notes.txt").write_text("not HL7", encoding="utf-8")
    pages = list(read_hl7_folder(tmp_path, source_name="lab"))
    assert [(p.entity, len(p.records)) for p in pages] == [("messages", 4), ("results", 3)]
    deliveries = [r["delivery_id"] for r in pages[0].records]
    assert deliveries == [
        "lab/M-1.hl7#1",
        "lab/M-1.2.hl7#1",
        "lab/week.hl7#1",
        "lab/week.hl7#envelope-1",
    ]
    orders = [r["received_order"] for r in pages[0].records]
    assert orders[0] < orders[1]  # the re-delivery counts as received second
    assert pages[0].cursor == {"files": {}}  # only the group's last page marks files done
    assert set(pages[-1].cursor["files"]) == {"lab/M-1.hl7", "lab/M-1.2.hl7", "lab/week.hl7"}
    assert list(read_hl7_folder(tmp_path, pages[-1].cursor, source_name="lab")) == []
    (tmp_path / "lab" / "M-1.2.hl7").write_text(MINIMAL.replace("|M-1|", "|M-4|"), encoding="utf-8")
    again = list(read_hl7_folder(tmp_path, pages[-1].cursor, source_name="lab"))
    assert [r["delivery_id"] for r in again[0].records] == ["lab/M-1.2.hl7#1"]


def test_folder_reader_pages_whole_files(tmp_path: Path) -> None:
    for number in range(5):
        (tmp_path / f"M-{number}.hl7").write_text(
            MINIMAL.replace("|M-1|", f"|M-{number}|"), encoding="utf-8"
        )
    pages = list(read_hl7_folder(tmp_path, source_name="lab", page_size=4))
    assert [(p.entity, len(p.records)) for p in pages] == [
        ("messages", 2), ("results", 2), ("messages", 2), ("results", 2), ("messages", 1), ("results", 1)
    ]  # fmt: skip
    assert [len(p.cursor["files"]) for p in pages] == [0, 2, 2, 4, 4, 5]


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(hl7v2.SourceFormatError, match="does not exist"):
        list(read_hl7_folder(tmp_path / "nope", source_name="lab"))


# --- MLLP ---------------------------------------------------------------------------------------------
def test_frames_are_decoded_across_chunks_and_noise() -> None:
    stream = (
        b"\r\n"
        + frame_message("MSH|a")
        + b"noise"
        + frame_message("MSH|b")
        + frame_message("MSH|c")
    )
    decoder = MllpFrameDecoder()
    frames = []
    for start in range(0, len(stream), 3):
        frames.extend(decoder.feed(stream[start : start + 3]))
    assert frames == [b"MSH|a", b"MSH|b", b"MSH|c"]
    assert decoder.discarded == len(b"\r\n") + len(b"noise")


def test_an_endless_frame_is_refused() -> None:
    decoder = MllpFrameDecoder(max_frame_bytes=10)
    with pytest.raises(MllpFrameError):
        decoder.feed(b"\x0b" + b"x" * 20)


def test_frame_message_wraps_in_start_and_end_blocks() -> None:
    assert frame_message("MSH|x") == b"\x0bMSH|x\x1c\r"


# --- acknowledgements ---------------------------------------------------------------------------------
def test_ack_aa_echoes_msh10_and_swaps_the_parties() -> None:
    message = only_message(MINIMAL)
    ack = build_ack(message, "AA", control_id="A1", timestamp="20250301101600+0000")
    assert ack_fields(ack) == ("AA", "M-1")
    msh, msa = ack.rstrip("\r").split("\r")
    fields = msh.split("|")
    assert fields[2:6] == ["HP", "MOH", "LIS", "LAB^LAB01^L"]
    assert fields[8:12] == ["ACK^R01^ACK", "A1", "P", "2.5.1"]
    assert msa == "MSA|AA|M-1"
    parsed = hl7apy_parse(ack, find_groups=False)
    assert parsed.msa.msa_1.value == "AA" and parsed.msa.msa_2.value == "M-1"


def test_ack_ae_carries_the_reason_escaped() -> None:
    message = only_message(MINIMAL.split("\rOBX")[0][:-20])
    assert message.problem is not None
    ack = build_ack(
        message,
        "AE",
        control_id="A2",
        timestamp="20250301101600+0000",
        text="a | b",
        error=message.problem,
    )
    assert ack_fields(ack) == ("AE", "M-1")
    lines = ack.rstrip("\r").split("\r")
    assert lines[1] == "MSA|AE|M-1|a \\F\\ b"
    err = lines[2].split("|")
    assert err[0] == "ERR" and err[3] == hl7v2.ERROR_REQUIRED_MISSING and err[4] == "E"
    assert Separators().decode(err[8]) == message.problem.detail


def test_ack_ar_without_a_usable_message() -> None:
    ack = build_ack(None, "AR", control_id="A3", timestamp="20250301101600+0000", text="no MSH")
    assert ack_fields(ack) == ("AR", "")
    with pytest.raises(ValueError, match="MSA-1"):
        build_ack(None, "OK", control_id="A4", timestamp="x")


# --- privacy preparation ------------------------------------------------------------------------------
def test_prepare_pseudonymises_and_keeps_only_table_columns() -> None:
    adapter = Hl7v2Adapter()
    key = Pseudonymiser(b"0123456789abcdef0123")
    records = result_records(only_message(MINIMAL))
    (row,) = adapter.prepare("results", records, key)
    assert set(row) == set(RESULTS.entity_columns)
    text = json.dumps(row)
    for secret in ("Doe", "Jane", "Main St", "3456789", "19900101", "000123", "900101-1"):
        assert secret not in text, secret
    assert row["patient_key"] == key.pseudonym("patient", "FAC01|000123")
    identifiers = json.loads(row["patient_identifiers"])
    assert [i["pseudonym"] for i in identifiers] == [
        key.pseudonym("patient", "FAC01|000123"),
        key.pseudonym("patient", "NIR|900101-1"),
    ]
    assert (row["patient_birth_year"], row["patient_age_band"], row["patient_sex"]) == (
        "1990",
        "35-39",
        "F",
    )
    other = Pseudonymiser(b"another key of 20 chars")
    (row_other,) = adapter.prepare("results", records, other)
    assert row_other["patient_key"] != row["patient_key"]


def test_prepare_drops_the_birth_year_of_the_very_old() -> None:
    records = result_records(only_message(MINIMAL.replace("||19900101|F", "||19300101|F")))
    (row,) = Hl7v2Adapter().prepare("results", records, Pseudonymiser(b"0123456789abcdef0123"))
    assert row["patient_birth_year"] is None and row["patient_age_band"] == "85+"


def test_prepare_messages_keys_the_digest() -> None:
    message = only_message(MINIMAL)
    record = message_record(message, Delivery("f#1", "f#000001", "f"))
    key = Pseudonymiser(b"0123456789abcdef0123")
    (row,) = Hl7v2Adapter().prepare("messages", [record], key)
    assert row["message_digest"] == key.pseudonym("hl7v2_message", message.content_sha256)
    assert "content_sha256" not in row


def test_prepare_refuses_to_run_without_a_pseudonymiser() -> None:
    with pytest.raises(ConfigError, match="pseudonymiser"):
        Hl7v2Adapter().prepare("results", [], None)


def test_parse_message_never_raises_on_noise() -> None:
    for text in ("", "MSH", "MSH|", "MSH|^~\\&", "\x00\x01", "MSH|^~\\&|" + "|" * 50):
        message = parse_message(segment_lines(text))
        assert message.problem is not None
