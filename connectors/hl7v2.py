"""HL7 v2 laboratory results (ORU^R01, versions 2.3 to 2.5.1): our own parser, batch files,
file drops, MLLP framing and acknowledgements.

Parsing follows the HL7 v2 encoding rules:

- Segments end with CR; LF and CRLF are accepted too (interface engines and editors rewrite
  them), and the last segment may lack its terminator.
- The separators come from the message itself: MSH-1 is the field separator, MSH-2 the
  component, repetition, escape and subcomponent characters, in that order. A field is split
  into repetitions, components and subcomponents, and only then are escape sequences decoded
  (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, ``\\.br\\`` and ``\\Xhh\\``), so an escaped ``^`` never
  splits a component.
- ``FHS``/``BHS`` ... ``BTS``/``FTS`` batch files are split into their messages, and the counts
  in BTS-1 (messages in the batch) and FTS-1 (batches in the file) are checked.

A message that cannot be used is never an exception for the whole file: it comes out as a
:class:`Hl7Message` carrying :class:`Problem` entries (rule, place, reason), and the records
built from it say so, so the pipeline can quarantine it with the reason while the rest of
the file goes on. The rules are ``segment_valid`` (a line that is not a segment, or unusable
encoding characters), ``message_supported`` (not ORU^R01, or a version outside 2.3-2.5.1),
``msh10_present`` (no message control id), ``message_complete`` (no PID, no OBR, or an order
without observations that does not say why), and ``batch_complete`` for batch envelopes
whose counts do not match.

Records: one *message* record per message received (``message_record``) and one *result*
record per OBX (``result_records``) with the message, patient, order and specimen fields it
belongs to and its position in the message. An order reported without any observation (a
rejected specimen, OBR-25 ``X``) gives one result record too, at the OBR's position, so
rejections are counted. Patient fields are passed on only as far as the pipeline needs them
to pseudonymise (PID-3 identifiers, PID-7 birth date, PID-8 sex); names, addresses, phone
numbers and next of kin are never copied out of the parsed message.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from connectors.base import (
    DEFAULT_MAX_FILE_BYTES,
    Cursor,
    Page,
    Record,
    check_file_size,
    file_sha256,
)
from connectors.errors import SourceError, SourceFormatError

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
FILE_SUFFIXES = (".hl7",)

RULE_SEGMENT_VALID = "segment_valid"
RULE_MESSAGE_SUPPORTED = "message_supported"
RULE_MSH10_PRESENT = "msh10_present"
RULE_MESSAGE_COMPLETE = "message_complete"
RULE_BATCH_COMPLETE = "batch_complete"
# When a message has several problems, the most basic one names it: a broken segment explains
# a missing PID, not the other way round.
_RULE_ORDER = (
    RULE_SEGMENT_VALID,
    RULE_MESSAGE_SUPPORTED,
    RULE_MSH10_PRESENT,
    RULE_MESSAGE_COMPLETE,
    RULE_BATCH_COMPLETE,
)

# HL7 table 0357 (message error condition codes), for ERR-3 in acknowledgements.
ERROR_SEGMENT_SEQUENCE = "100^Segment sequence error^HL70357"
ERROR_REQUIRED_MISSING = "101^Required field missing^HL70357"
ERROR_DATA_TYPE = "102^Data type error^HL70357"
ERROR_TABLE_VALUE = "103^Table value not found^HL70357"
ERROR_MESSAGE_TYPE = "200^Unsupported message type^HL70357"
ERROR_VERSION = "203^Unsupported version id^HL70357"
ERROR_INTERNAL = "207^Application internal error^HL70357"

# OBR-25 result statuses (HL7 table 0123) under which an order legitimately carries no OBX:
# order received, in process, scheduled, cancelled / specimen rejected, no order, no patient.
NO_RESULT_STATUSES = frozenset({"O", "I", "S", "X", "Y", "Z"})
LOINC_SYSTEMS = frozenset({"LN", "LOINC"})
ENVELOPE_SEGMENTS = ("FHS", "BHS", "BTS", "FTS")

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
MAX_FRAME_BYTES = 16 * 1024 * 1024
"""An MLLP frame larger than this is refused (a sender that never closes its frame)."""

_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_REDELIVERY = re.compile(r"^(?P<base>.*?)(?:\.(?P<copy>\d+))?(?P<suffix>\.[^.]+)$")


# --- separators and escapes -------------------------------------------------------------------
@dataclass(frozen=True)
class Separators:
    """The delimiters a message declares in MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    def decode(self, text: str) -> str:
        """Replace escape sequences by the characters they stand for.

        ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` give the delimiters, ``\\.br\\`` a line break and
        ``\\Xhh..\\`` the bytes it spells; highlighting (``\\H\\ \\N\\``) and character-set
        switches (``\\C..\\ \\M..\\``) carry no text and are dropped. Anything else, and an
        escape character without its closing partner, is kept as sent.
        """
        escape = self.escape
        if not escape or escape not in text:
            return text
        simple = {
            "F": self.field,
            "S": self.component,
            "T": self.subcomponent,
            "R": self.repetition,
            "E": escape,
        }
        out: list[str] = []
        position = 0
        while True:
            start = text.find(escape, position)
            if start < 0:
                out.append(text[position:])
                return "".join(out)
            end = text.find(escape, start + 1)
            if end < 0:
                out.append(text[position:])
                return "".join(out)
            out.append(text[position:start])
            out.append(_escape_meaning(text[start + 1 : end], simple, text[start : end + 1]))
            position = end + 1

    def encode(self, text: str) -> str:
        """Escape the delimiters in ``text`` (the escape character first, so the sequences
        added for the others are not escaped again)."""
        escape = self.escape
        out = text.replace(escape, f"{escape}E{escape}")
        for char, code in (
            (self.field, "F"),
            (self.component, "S"),
            (self.subcomponent, "T"),
            (self.repetition, "R"),
        ):
            out = out.replace(char, f"{escape}{code}{escape}")
        return out.replace("\r", f"{escape}.br{escape}").replace("\n", f"{escape}.br{escape}")


DEFAULT_SEPARATORS = Separators()


def _escape_meaning(sequence: str, simple: dict[str, str], as_sent: str) -> str:
    if sequence in simple:
        return simple[sequence]
    if sequence == ".br":
        return "\n"
    if sequence in ("H", "N") or sequence[:1] in ("C", "M"):
        return ""
    if sequence[:1] == "X" and len(sequence) > 1:
        try:
            data = bytes.fromhex(sequence[1:])
        except ValueError:
            return as_sent
        return data.decode("utf-8", errors="replace")
    return as_sent


def _separators_from_msh(line: str) -> tuple[Separators | None, str | None]:
    """The separators an MSH line declares, or None and what is wrong with MSH-1/MSH-2."""
    if len(line) < 4:
        return None, "MSH is too short to hold MSH-1 (field separator) and MSH-2"
    field_separator = line[3]
    encoding = line[4:].split(field_separator, 1)[0]
    # v2.7 added a fifth character (truncation); the first four mean the same in every version.
    usable = encoding[:4]
    distinct = len(set(usable + field_separator)) == len(usable) + 1
    printable = all(not c.isalnum() and not c.isspace() for c in usable + field_separator)
    if len(encoding) not in (4, 5) or not distinct or not printable:
        return None, (
            f"MSH-2 (encoding characters) is {encoding!r}: expected the four distinct characters "
            "component, repetition, escape and subcomponent, such as ^~\\&"
        )
    return Separators(field_separator, usable[0], usable[1], usable[2], usable[3]), None


# --- segments -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One segment as sent. ``fields[n]`` is field n still encoded (``fields[0]`` is the
    segment id); for MSH, ``fields[1]`` is the field separator itself, as the standard counts."""

    name: str
    fields: tuple[str, ...]
    position: int
    """1-based position of the segment in its message (MSH is 1)."""
    separators: Separators

    @classmethod
    def parse(cls, line: str, position: int, separators: Separators) -> Segment:
        parts = line.split(separators.field)
        name = parts[0]
        # MSH-1 is the separator itself, so MSH fields are numbered one further along.
        fields = ("MSH", separators.field, *parts[1:]) if name == "MSH" else tuple(parts)
        return cls(name, fields, position, separators)

    def raw(self, number: int) -> str:
        """Field ``number`` as sent (encoded); empty when absent."""
        return self.fields[number] if 0 <= number < len(self.fields) else ""

    def repetitions(self, number: int) -> list[str]:
        raw = self.raw(number)
        if self.name == "MSH" and number in (1, 2):  # the delimiters themselves
            return [raw] if raw else []
        return raw.split(self.separators.repetition) if raw else []

    def components(self, number: int, repetition: int = 1) -> list[str]:
        """The components of one repetition of a field, still encoded."""
        repetitions = self.repetitions(number)
        if len(repetitions) < repetition:
            return []
        return repetitions[repetition - 1].split(self.separators.component)

    def value(
        self, number: int, component: int = 1, subcomponent: int = 1, repetition: int = 1
    ) -> str | None:
        """One decoded subcomponent, or None when it is empty or absent."""
        if self.name == "MSH" and number in (1, 2):
            return self.raw(number) or None
        components = self.components(number, repetition)
        if len(components) < component:
            return None
        subcomponents = components[component - 1].split(self.separators.subcomponent)
        if len(subcomponents) < subcomponent:
            return None
        text = self.separators.decode(subcomponents[subcomponent - 1])
        return text or None

    def text(self, number: int) -> str | None:
        """A whole field decoded, its parts joined with the standard delimiters ``~ ^ &``:
        the readable form of a value such as ``260415000^Not detected^SCT`` or ``<^20``."""
        if self.name == "MSH" and number in (1, 2):
            return self.raw(number) or None
        seps = self.separators
        repetitions = []
        for repetition in self.repetitions(number):
            components = [
                "&".join(_trimmed([seps.decode(sub) for sub in component.split(seps.subcomponent)]))
                for component in repetition.split(seps.component)
            ]
            repetitions.append("^".join(_trimmed(components)))
        joined = "~".join(_trimmed(repetitions))
        return joined or None


def _trimmed(parts: list[str]) -> list[str]:
    """Without the empty parts at the end (``a^b^^`` is ``a^b``)."""
    while parts and not parts[-1]:
        parts.pop()
    return parts


# --- messages ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """Why a message (or a batch envelope) cannot be landed as results."""

    rule: str
    location: str
    """Where: ``MSH-2``, ``segment 4``, ``OBR 1 (segment 5)``, ``BTS (line 23)`` ..."""
    detail: str
    error_code: str = ERROR_SEGMENT_SEQUENCE
    """ERR-3 for an acknowledgement (HL7 table 0357)."""
    reject: bool = False
    """True when the message cannot be accepted at all (answered ``AR``, not ``AE``)."""

    def describe(self) -> str:
        return f"{self.location}: {self.detail}"


@dataclass
class Order:
    """One OBR with the segments that belong to it."""

    obr: Segment
    number: int
    """1-based index of the OBR in the message."""
    patient: Segment | None
    common_order: Segment | None
    observations: list[Segment] = field(default_factory=list)
    specimens: list[Segment] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    observation_comments: dict[int, list[str]] = field(default_factory=dict)
    """NTE text by the position of the OBX it follows."""


@dataclass
class Hl7Message:
    """One message: its segments, the orders found in it, and any problems."""

    segments: list[Segment]
    separators: Separators
    index: int
    """1-based position of the message in its file or batch."""
    content_sha256: str
    problems: list[Problem] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)

    @property
    def header(self) -> Segment | None:
        first = self.segments[0] if self.segments else None
        return first if first is not None and first.name == "MSH" else None

    @property
    def control_id(self) -> str | None:
        return self.header.value(10) if self.header else None

    @property
    def problem(self) -> Problem | None:
        """The problem that names the message (see ``_RULE_ORDER``)."""
        if not self.problems:
            return None
        return min(self.problems, key=lambda p: _RULE_ORDER.index(p.rule))

    @property
    def observation_count(self) -> int:
        return sum(len(order.observations) for order in self.orders)


def segment_lines(text: str) -> list[str]:
    """Segments of a text, whatever its line endings; blank lines are dropped."""
    return [line for line in _LINE_BREAKS.split(text) if line.strip()]


def decode_bytes(data: bytes) -> str:
    """HL7 text from bytes: UTF-8 (the usual MSH-18 ``UNICODE UTF-8``, and plain ASCII), else
    ISO 8859-1, the other common declaration, which never fails to decode."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_message(lines: Sequence[str], *, index: int = 1) -> Hl7Message:
    """Parse one message given as its segment lines; problems are recorded, never raised."""
    digest = hashlib.sha256("\r".join(lines).encode("utf-8")).hexdigest()
    if not lines or not lines[0].startswith("MSH"):
        segments = [Segment.parse(line, n, DEFAULT_SEPARATORS) for n, line in enumerate(lines, 1)]
        message = Hl7Message(segments, DEFAULT_SEPARATORS, index, digest)
        message.problems.append(
            Problem(
                RULE_SEGMENT_VALID,
                "segment 1",
                "the message does not start with an MSH segment",
                ERROR_SEGMENT_SEQUENCE,
                reject=True,
            )
        )
        return message
    separators, separator_problem = _separators_from_msh(lines[0])
    # With unusable encoding characters the header is still read with the defaults (the
    # field separator is MSH-1 either way), so the message can be named in quarantine.
    usable = separators or Separators(field=lines[0][3] if len(lines[0]) > 3 else "|")
    segments = [Segment.parse(line, n, usable) for n, line in enumerate(lines, 1)]
    message = Hl7Message(segments, usable, index, digest)
    if separator_problem is not None:
        message.problems.append(
            Problem(RULE_SEGMENT_VALID, "MSH-2", separator_problem, ERROR_DATA_TYPE, reject=True)
        )
        return message
    message.problems.extend(_segment_problems(lines, usable))
    message.problems.extend(_header_problems(segments[0]))
    message.orders = _group_orders(segments, message.problems)
    message.problems.extend(_completeness_problems(segments, message.orders))
    return message


def _segment_problems(lines: Sequence[str], separators: Separators) -> list[Problem]:
    problems = []
    for number, line in enumerate(lines, start=1):
        head = line[:3]
        if _SEGMENT_ID.fullmatch(head) and (len(line) == 3 or line[3] == separators.field):
            continue
        # The line's content is not quoted: a broken PID line would carry a name.
        problems.append(
            Problem(
                RULE_SEGMENT_VALID,
                f"segment {number}",
                "the line is not a segment: expected a three-character segment id (capital "
                f"letters and digits) followed by {separators.field!r}",
                ERROR_SEGMENT_SEQUENCE,
            )
        )
    return problems


def _header_problems(msh: Segment) -> list[Problem]:
    problems = []
    kind, event = msh.value(9, 1), msh.value(9, 2)
    if (kind, event) != ("ORU", "R01"):
        problems.append(
            Problem(
                RULE_MESSAGE_SUPPORTED,
                "MSH-9",
                f"message type {msh.text(9) or '(empty)'} is not ORU^R01: this source reads "
                "laboratory results only",
                ERROR_MESSAGE_TYPE,
                reject=True,
            )
        )
    version = msh.value(12)
    if version not in SUPPORTED_VERSIONS:
        problems.append(
            Problem(
                RULE_MESSAGE_SUPPORTED,
                "MSH-12",
                f"version {version or '(empty)'} is not supported (expected one of "
                f"{', '.join(SUPPORTED_VERSIONS)})",
                ERROR_VERSION,
                reject=True,
            )
        )
    if not msh.value(10):
        problems.append(
            Problem(
                RULE_MSH10_PRESENT,
                "MSH-10",
                "the message control id is empty, so the message cannot be identified or "
                "acknowledged",
                ERROR_REQUIRED_MISSING,
            )
        )
    return problems


def _group_orders(segments: Sequence[Segment], problems: list[Problem]) -> list[Order]:
    """Orders in message order. An ORC applies to the OBRs after it until the next ORC or PID
    (senders often send one ORC for several OBRs); SPM, OBX and NTE belong to the last OBR."""
    orders: list[Order] = []
    patient: Segment | None = None
    common_order: Segment | None = None
    order: Order | None = None
    last_observation: Segment | None = None
    for segment in segments[1:]:
        name = segment.name
        if name == "PID":
            patient, common_order, order, last_observation = segment, None, None, None
        elif name == "ORC":
            common_order, order, last_observation = segment, None, None
        elif name == "OBR":
            order = Order(segment, len(orders) + 1, patient, common_order)
            orders.append(order)
            last_observation = None
        elif name in ("OBX", "SPM", "NTE") and order is None:
            problems.append(
                Problem(
                    RULE_SEGMENT_VALID,
                    f"segment {segment.position}",
                    f"{name} comes before any OBR, so it belongs to no order",
                    ERROR_SEGMENT_SEQUENCE,
                )
            )
        elif name == "OBX" and order is not None:
            order.observations.append(segment)
            last_observation = segment
        elif name == "SPM" and order is not None:
            order.specimens.append(segment)
            last_observation = None
        elif name == "NTE" and order is not None:
            text = segment.text(3) or ""
            if last_observation is not None:
                order.observation_comments.setdefault(last_observation.position, []).append(text)
            else:
                order.comments.append(text)
    return orders


def _completeness_problems(segments: Sequence[Segment], orders: Sequence[Order]) -> list[Problem]:
    names = {segment.name for segment in segments}
    problems = []
    if "PID" not in names:
        problems.append(
            Problem(
                RULE_MESSAGE_COMPLETE,
                "PID",
                "the message has no PID segment: the results belong to no patient",
                ERROR_REQUIRED_MISSING,
            )
        )
    if not orders:
        problems.append(
            Problem(
                RULE_MESSAGE_COMPLETE,
                "OBR",
                "the message has no OBR segment: it reports no order",
                ERROR_REQUIRED_MISSING,
            )
        )
    for order in orders:
        status = order.obr.value(25)
        if order.observations or status in NO_RESULT_STATUSES:
            continue
        problems.append(
            Problem(
                RULE_MESSAGE_COMPLETE,
                f"OBR {order.number} (segment {order.obr.position})",
                f"the order has no OBX and its result status OBR-25 is "
                f"{status or 'empty'} (only O, I, S, X, Y or Z orders come without "
                "observations): the message looks truncated",
                ERROR_REQUIRED_MISSING,
            )
        )
    return problems


# --- batches ----------------------------------------------------------------------------------------
@dataclass
class SplitText:
    """The messages of a file or frame (as segment lines) and any envelope problems."""

    messages: list[list[str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def split_messages(text: str) -> SplitText:
    """Split a file into messages: each MSH starts one, and FHS/BHS/BTS/FTS envelopes are
    removed after their counts are checked. Lines before the first MSH that are not envelope
    segments form a message of their own (which then fails ``segment_valid``)."""
    split = SplitText()
    envelope = _Envelope(split.problems)
    started = False
    for number, line in enumerate(segment_lines(text), start=1):
        head = line[:3]
        if head in ENVELOPE_SEGMENTS:
            envelope.segment(head, line, number)
            started = False  # whatever follows an envelope segment is a new message
        elif head == "MSH" or not started:
            split.messages.append([line])
            envelope.message_started(is_message=head == "MSH")
            started = True
        else:
            split.messages[-1].append(line)
    envelope.finish()
    return split


class _Envelope:
    """Checks FHS/BHS ... BTS/FTS: BTS-1 counts the messages of a batch, FTS-1 the batches."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        self.separator = "|"
        self.batch_line: int | None = None
        self.file_line: int | None = None
        self.messages_in_batch = 0
        self.batches_in_file = 0

    def segment(self, head: str, line: str, number: int) -> None:
        if head in ("FHS", "BHS") and len(line) > 3:
            self.separator = line[3]
        if head == "FHS":
            self.file_line, self.batches_in_file = number, 0
        elif head == "BHS":
            if self.batch_line is not None:
                self._problem(
                    f"BHS (line {number})",
                    f"a new batch starts before BTS closed the batch of line {self.batch_line}",
                )
            self.batch_line, self.messages_in_batch = number, 0
            self.batches_in_file += 1
        elif head == "BTS":
            self._check_count(line, number, "BTS", self.messages_in_batch, "messages in the batch")
            self.batch_line = None
        elif head == "FTS":
            self._check_count(line, number, "FTS", self.batches_in_file, "batches in the file")
            self.file_line = None

    def message_started(self, *, is_message: bool) -> None:
        if is_message:
            self.messages_in_batch += 1

    def finish(self) -> None:
        if self.batch_line is not None:
            self._problem(
                f"BHS (line {self.batch_line})", "the batch has no BTS: the file is truncated"
            )
        if self.file_line is not None:
            self._problem(
                f"FHS (line {self.file_line})", "the file has no FTS: the file is truncated"
            )

    def _check_count(self, line: str, number: int, head: str, found: int, what: str) -> None:
        fields = line.split(self.separator)
        declared = fields[1].strip() if len(fields) > 1 else ""
        if not declared:
            return  # the count is optional
        if not declared.isdigit():
            self._problem(f"{head} (line {number})", f"{head}-1 {declared!r} is not a count")
        elif int(declared) != found:
            self._problem(
                f"{head} (line {number})",
                f"{head}-1 says {declared} {what}, but {found} were found: the file lost or "
                "gained messages on the way",
            )

    def _problem(self, location: str, detail: str) -> None:
        self.problems.append(Problem(RULE_BATCH_COMPLETE, location, detail, ERROR_SEGMENT_SEQUENCE))


def parse_text(text: str) -> tuple[list[Hl7Message], list[Problem]]:
    """Every message of a file or frame, and the problems of its batch envelope."""
    split = split_messages(text)
    messages = [parse_message(lines, index=n) for n, lines in enumerate(split.messages, start=1)]
    return messages, split.problems


# --- records ----------------------------------------------------------------------------------------
def _coded(segment: Segment | None, number: int) -> tuple[str | None, str | None, str | None]:
    """Code, text and coding system of a CE/CWE field, preferring the LOINC triplet: senders
    often put their local code first and LOINC in the alternate triplet (components 4-6)."""
    if segment is None:
        return None, None, None
    first = (segment.value(number, 1), segment.value(number, 2), segment.value(number, 3))
    alternate = (segment.value(number, 4), segment.value(number, 5), segment.value(number, 6))
    if (first[2] or "").upper() not in LOINC_SYSTEMS and (alternate[2] or "").upper() in (
        LOINC_SYSTEMS
    ):
        return alternate
    return first


def _organisation_code(segment: Segment | None, number: int) -> tuple[str | None, str | None]:
    """Identifier and name of an XON field: XON-10 (v2.5), else XON-3 (the v2.3 id number)."""
    if segment is None:
        return None, None
    code = segment.value(number, 10) or segment.value(number, 3)
    return code, segment.value(number, 1)


def _timestamp(segment: Segment | None, number: int) -> str | None:
    """The time of a TS/DTM field (TS-1), as sent: typing it is staging's job."""
    return segment.value(number, 1) if segment is not None else None


def _entity(segment: Segment | None, number: int) -> tuple[str | None, str | None]:
    """Entity identifier and namespace of an EI field (order numbers)."""
    if segment is None:
        return None, None
    return segment.value(number, 1), segment.value(number, 2)


def _header_fields(message: Hl7Message) -> Record:
    msh = message.header
    return {
        "message_control_id": msh.value(10) if msh else None,
        "hl7_version": msh.value(12) if msh else None,
        "sending_application": msh.value(3) if msh else None,
        "sending_facility": msh.value(4, 1) if msh else None,
        "sending_facility_id": msh.value(4, 2) if msh else None,
        "message_sent_at": _timestamp(msh, 7),
    }


def _patient_fields(patient: Segment | None) -> Record:
    """What the pipeline needs to pseudonymise: PID-3 (every repetition), PID-7 and PID-8.
    The ``pid*`` keys are not raw columns: the source adapter turns them into pseudonyms and
    a birth year, so an unprepared record can never land them."""
    identifiers = []
    if patient is not None:
        for repetition in range(1, len(patient.repetitions(3)) + 1):
            value = patient.value(3, 1, repetition=repetition)
            if value is None:
                continue
            authority = patient.value(3, 4, 1, repetition) or patient.value(3, 4, 2, repetition)
            identifiers.append(
                {
                    "id": value,
                    "authority": authority,
                    "type": patient.value(3, 5, repetition=repetition),
                }
            )
    return {
        "pid3_identifiers": identifiers,
        "pid7_birth_date": _timestamp(patient, 7),
        "patient_sex": patient.value(8) if patient else None,
    }


def _order_fields(order: Order) -> Record:
    obr, orc = order.obr, order.common_order
    placer, placer_namespace = _entity(obr, 2)
    filler, filler_namespace = _entity(obr, 3)
    if placer is None and orc is not None:
        placer, placer_namespace = _entity(orc, 2)
    if filler is None and orc is not None:
        filler, filler_namespace = _entity(orc, 3)
    test_code, test_name, test_system = _coded(obr, 4)
    facility_code, facility_name = _organisation_code(orc, 21)
    specimen = order.specimens[0] if order.specimens else None
    specimen_code, specimen_name, specimen_system = _coded(specimen, 4)
    return {
        "placer_order_number": placer,
        "placer_order_namespace": placer_namespace,
        "filler_order_number": filler,
        "filler_order_namespace": filler_namespace,
        "order_test_code": test_code,
        "order_test_name": test_name,
        "order_test_system": test_system,
        "collected_at": _timestamp(obr, 7),
        "results_reported_at": _timestamp(obr, 22),
        "order_status": obr.value(25),
        "ordering_facility_code": facility_code,
        "ordering_facility_name": facility_name,
        "specimen_type_code": specimen_code,
        "specimen_type_name": specimen_name,
        "specimen_type_system": specimen_system,
        "specimen_collected_at": specimen.value(17, 1, 1) if specimen else None,
        "specimen_received_at": _timestamp(specimen, 18),
        "specimen_reject_reason_code": specimen.value(21, 1) if specimen else None,
        "specimen_reject_reason": specimen.value(21, 2) if specimen else None,
        "order_comments": "\n".join(order.comments) or None,
    }


def _observation_fields(obx: Segment | None, index: int | None, comments: list[str]) -> Record:
    test_code, test_name, test_system = _coded(obx, 3)
    performer_code, _ = _organisation_code(obx, 23)
    return {
        "obx_index": str(index) if index is not None else None,
        "obx_set_id": obx.value(1) if obx else None,
        "value_type": obx.value(2) if obx else None,
        "test_code": test_code,
        "test_name": test_name,
        "test_system": test_system,
        "value": obx.text(5) if obx else None,
        "units": obx.value(6, 1) if obx else None,
        "reference_range": obx.text(7) if obx else None,
        "abnormal_flags": obx.text(8) if obx else None,
        "result_status": obx.value(11) if obx else None,
        "observed_at": _timestamp(obx, 14),
        "analysed_at": _timestamp(obx, 19),
        "performing_lab_code": performer_code,
        "observation_comments": "\n".join(comments) or None,
    }


def result_records(message: Hl7Message) -> list[Record]:
    """One record per OBX (and one per order without any), keyed by MSH-10 and the segment's
    position in the message. A message with a problem gives none: its message record carries
    the problem instead."""
    if message.problems:
        return []
    header = _header_fields(message)
    records: list[Record] = []
    index = 0
    for order in message.orders:
        base = {**header, **_patient_fields(order.patient), **_order_fields(order)}
        if not order.observations:
            records.append(
                {
                    **base,
                    **_observation_fields(None, None, []),
                    "segment_position": str(order.obr.position),
                }
            )
        for obx in order.observations:
            index += 1
            comments = order.observation_comments.get(obx.position, [])
            records.append(
                {
                    **base,
                    **_observation_fields(obx, index, comments),
                    "segment_position": str(obx.position),
                }
            )
    return records


@dataclass(frozen=True)
class Delivery:
    """How a message reached us: which file (and where in it) or which MLLP connection."""

    delivery_id: str
    """Unique per delivery: ``<file>#<n>`` for a file drop, an MLLP receipt id otherwise."""
    received_order: str
    """Sorts deliveries in the order they were received (the first of two copies wins)."""
    received_from: str
    received_at: str | None = None


def message_record(message: Hl7Message, delivery: Delivery) -> Record:
    """The message as delivered: header, counts, and its problem if it has one."""
    msh = message.header
    problem = message.problem
    return {
        "delivery_id": delivery.delivery_id,
        "received_order": delivery.received_order,
        "received_from": delivery.received_from,
        "received_at": delivery.received_at,
        "message_index": str(message.index),
        **_header_fields(message),
        "message_type": msh.text(9) if msh else None,
        "processing_id": msh.value(11) if msh else None,
        "receiving_application": msh.value(5) if msh else None,
        "receiving_facility": msh.value(6, 1) if msh else None,
        "character_set": msh.value(18) if msh else None,
        "segment_count": str(len(message.segments)),
        "order_count": str(len(message.orders)),
        "observation_count": str(message.observation_count),
        "content_sha256": message.content_sha256,
        "parse_rule": problem.rule if problem else None,
        "parse_location": problem.location if problem else None,
        "parse_problem": "; ".join(p.describe() for p in message.problems) or None,
    }


def envelope_record(problem: Problem, delivery: Delivery) -> Record:
    """A batch envelope whose counts do not add up, recorded next to the file's messages."""
    return {
        "delivery_id": delivery.delivery_id,
        "received_order": delivery.received_order,
        "received_from": delivery.received_from,
        "received_at": delivery.received_at,
        "parse_rule": problem.rule,
        "parse_location": problem.location,
        "parse_problem": problem.describe(),
    }


# --- file drops -------------------------------------------------------------------------------------
def _file_order(relative: str) -> tuple[str, str, int, str]:
    """Read order of a drop: path order, except that a re-delivery ``name.2.hl7`` comes right
    after ``name.hl7`` (in plain path order it would come first)."""
    folder, _, name = relative.rpartition("/")
    match = _REDELIVERY.match(name)
    if match is None:
        return folder, name, 1, name
    copy = int(match.group("copy") or 1)
    return folder, match.group("base") + match.group("suffix"), copy, name


def _received_order(relative: str, index: int) -> str:
    folder, base, copy, _ = _file_order(relative)
    return f"{folder}/{base}~{copy:04d}#{index:06d}"


@dataclass
class FileRecords:
    """The records of one file of a drop."""

    relative: str
    fingerprint: str
    messages: list[Record]
    results: list[Record]


def read_file_records(path: Path, relative: str, fingerprint: str) -> FileRecords:
    """Message and result records of one file (``relative`` names it in the records)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: the file cannot be read: {exc.strerror}") from exc
    messages, envelope_problems = parse_text(decode_bytes(data))
    message_rows: list[Record] = []
    result_rows: list[Record] = []
    for message in messages:
        delivery = Delivery(
            delivery_id=f"{relative}#{message.index}",
            received_order=_received_order(relative, message.index),
            received_from=relative,
        )
        message_rows.append(message_record(message, delivery))
        result_rows.extend(result_records(message))
    for number, problem in enumerate(envelope_problems, start=1):
        delivery = Delivery(
            delivery_id=f"{relative}#envelope-{number}",
            received_order=_received_order(relative, 999_999),
            received_from=relative,
        )
        message_rows.append(envelope_record(problem, delivery))
    return FileRecords(relative, fingerprint, message_rows, result_rows)


def read_hl7_folder(
    folder: Path,
    cursor: Cursor | None = None,
    *,
    source_name: str = "hl7v2",
    page_size: int = 50_000,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> Iterator[Page]:
    """Pages of ``messages`` and ``results`` records from every ``*.hl7`` file under ``folder``.

    The cursor is ``{"files": {relative path: sha256}}``: files whose content is unchanged
    since it was saved are skipped. Files are read in path order (a re-delivery
    ``name.2.hl7`` right after ``name.hl7``) and grouped, whole, into pages of about
    ``page_size`` records, so a drop of thousands of one-message files does not cost a
    landing and validation each. A group gives its ``messages`` page(s), then its
    ``results`` page(s); only the group's last page marks its files done in the cursor.
    """
    if not folder.is_dir():
        raise SourceFormatError(
            f"{source_name}: {folder}", "the folder does not exist or is not a directory"
        )
    seen: dict[str, str] = dict((cursor or {}).get("files", {}))
    paths = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES]
    relatives = sorted((p.relative_to(folder).as_posix() for p in paths), key=_file_order)
    group: list[FileRecords] = []
    size = 0
    for relative in relatives:
        try:
            # by size first: hashing a hostile gigabyte would cost seconds before refusing it
            check_file_size(
                folder / relative, f"{source_name}: {folder / relative}", max_file_bytes
            )
            fingerprint = file_sha256(folder / relative)
        except OSError as exc:
            raise SourceError(
                f"{source_name}: {folder / relative}: the file cannot be read: {exc.strerror}"
            ) from exc
        if seen.get(relative) == fingerprint:
            continue
        try:
            records = read_file_records(folder / relative, relative, fingerprint)
        except SourceError as exc:
            raise SourceError(f"{source_name}: {exc}") from exc
        group.append(records)
        size += len(records.messages) + len(records.results)
        if size >= page_size:
            yield from _group_pages(folder, group, seen, page_size)
            group, size = [], 0
    if group:
        yield from _group_pages(folder, group, seen, page_size)


def _group_pages(
    folder: Path, group: list[FileRecords], seen: dict[str, str], page_size: int
) -> Iterator[Page]:
    first, last = group[0].relative, group[-1].relative
    origin = (
        f"{folder}: {first}"
        if len(group) == 1
        else f"{folder}: {len(group)} files, {first} to {last}"
    )
    messages = [record for file in group for record in file.messages]
    results = [record for file in group for record in file.results]
    for chunk in _chunks(messages, page_size):
        yield Page("messages", chunk, origin, {"files": dict(seen)})
    chunks = _chunks(results, page_size)
    for number, chunk in enumerate(chunks, start=1):
        if number == len(chunks):
            seen.update({file.relative: file.fingerprint for file in group})
        yield Page("results", chunk, origin, {"files": dict(seen)})


def _chunks(records: list[Record], size: int) -> list[list[Record]]:
    return [records[i : i + size] for i in range(0, len(records), size)] or [[]]


# --- MLLP ---------------------------------------------------------------------------------------------
class MllpFrameError(ValueError):
    """The peer sent a frame MLLP does not allow (too large)."""


def frame_message(message: str | bytes) -> bytes:
    """``0x0B`` message ``0x1C 0x0D``; text is sent as UTF-8."""
    data = message.encode("utf-8") if isinstance(message, str) else message
    return START_BLOCK + data + END_BLOCK


class MllpFrameDecoder:
    """Turns the bytes of a TCP stream into MLLP frame payloads.

    Bytes between frames (line noise, keep-alive newlines) are discarded and counted; a frame
    that grows past ``max_frame_bytes`` raises :class:`MllpFrameError`.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.buffer = bytearray()
        self.discarded = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer.extend(data)
        frames: list[bytes] = []
        while True:
            start = self.buffer.find(START_BLOCK)
            if start < 0:
                self.discarded += len(self.buffer)
                self.buffer.clear()
                return frames
            if start > 0:
                self.discarded += start
                del self.buffer[:start]
            end = self.buffer.find(END_BLOCK, 1)
            if end < 0:
                if len(self.buffer) > self.max_frame_bytes:
                    raise MllpFrameError(
                        f"an MLLP frame exceeds {self.max_frame_bytes} bytes without its end "
                        "block 0x1C 0x0D"
                    )
                return frames
            frames.append(bytes(self.buffer[1:end]))
            del self.buffer[: end + len(END_BLOCK)]


# --- acknowledgements ------------------------------------------------------------------------------
def _reencoded(segment: Segment | None, number: int) -> str:
    """A field of the received message re-encoded with the standard delimiters (the ACK
    always uses ``|^~\\&``, whatever the message declared)."""
    if segment is None:
        return ""
    components = segment.components(number)
    return DEFAULT_SEPARATORS.component.join(
        DEFAULT_SEPARATORS.subcomponent.join(
            DEFAULT_SEPARATORS.encode(segment.separators.decode(sub))
            for sub in component.split(segment.separators.subcomponent)
        )
        for component in components
    )


def build_ack(
    message: Hl7Message | None,
    code: str,
    *,
    control_id: str,
    timestamp: str,
    text: str | None = None,
    error: Problem | None = None,
) -> str:
    """An ``ACK`` for ``message``: MSA-1 ``code`` (AA, AE or AR), MSA-2 its MSH-10, and for an
    error MSA-3 and an ERR segment (location, HL7 table 0357 code, the reason in ERR-8).
    Sending and receiving application and facility are the message's, swapped."""
    if code not in ("AA", "AE", "AR"):
        raise ValueError(f"MSA-1 must be AA, AE or AR, got {code!r}")
    msh = message.header if message is not None else None
    encode = DEFAULT_SEPARATORS.encode
    version = (msh.value(12) if msh else None) or "2.5.1"
    header = "|".join(
        [
            "MSH",
            "^~\\&",
            _reencoded(msh, 5),
            _reencoded(msh, 6),
            _reencoded(msh, 3),
            _reencoded(msh, 4),
            timestamp,
            "",
            "ACK^R01^ACK",
            encode(control_id),
            encode((msh.value(11) if msh else None) or "P"),
            encode(version),
        ]
    )
    acknowledged = encode(message.control_id or "") if message is not None else ""
    segments = [header, "|".join(["MSA", code, acknowledged, encode(text or "")]).rstrip("|")]
    if error is not None:
        location = encode(error.location)
        segments.append(
            "|".join(["ERR", "", location, error.error_code, "E", "", "", "", encode(error.detail)])
        )
    return "\r".join(segments) + "\r"


def ack_fields(payload: str) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an acknowledgement; ``("", "")`` when it has no MSA."""
    separator = "|"
    for line in segment_lines(payload):
        if line.startswith("MSH") and len(line) > 3:
            separator = line[3]
        if line.startswith("MSA"):
            fields = line.split(separator)
            return (fields[1] if len(fields) > 1 else "", fields[2] if len(fields) > 2 else "")
    return "", ""
