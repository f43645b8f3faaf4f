"""QIDO-RS answered from the tenant-scoped study index (so evicted studies are found too), as DICOM JSON.

Matching follows PS3.18 8.3.4 / PS3.4 C.2.2.2: single value (exact; case-insensitive for person
names), wildcards `*` and `?`, UID lists, date and time ranges with open ends, and universal
matching for an empty value. Only attributes the index holds can be matched; anything else is a
400 that names it, never a silently ignored filter (a clinic would read that as "no such patient").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

from django.conf import settings
from django.db.models import CharField, F, Func, Model, Q, QuerySet, Value
from django.db.models.lookups import Regex
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from saas.studies.models import Instance, Series, Study
from tenants.models import Tenant


class QueryError(ValueError):
    """A QIDO-RS parameter the platform cannot honour; the message names it."""


class Level(StrEnum):
    STUDY = "studies"
    SERIES = "series"
    INSTANCE = "instances"


class Match(StrEnum):
    STRING = "string"  # exact or wildcard, case-sensitive
    PERSON_NAME = "pn"  # exact or wildcard, case-insensitive; fuzzy = prefix of any name component
    UID_LIST = "uid"
    DATE = "date"
    TIME = "time"
    INTEGER = "integer"
    CODE_LIST = "code"  # CS values such as Modality: a list, any of which matches
    MODALITIES = "modalities"  # ModalitiesInStudy: the study has any of the listed modalities


@dataclass(frozen=True)
class Attribute:
    keyword: str
    level: Level
    # Path from the level's own model to the indexed field, relative to the Study/Series/Instance row.
    field: str
    match: Match | None
    value: Callable[[Any, Answer], Any]

    # Looked up once: an answer of 1000 instances asks each attribute for its tag and VR 1000 times.
    @cached_property
    def tag(self) -> str:
        return f"{tag_for_keyword(self.keyword):08X}"

    @cached_property
    def vr(self) -> str:
        return dictionary_VR(self.keyword)


@dataclass(frozen=True)
class Answer:
    """What every formatted row needs besides the row itself."""

    base_url: str


def _study_of(row) -> Study:
    return row if isinstance(row, Study) else row.study


def _series_of(row) -> Series:
    return row if isinstance(row, Series) else row.series


def _study_url(row, answer: Answer) -> str:
    return f"{answer.base_url}/studies/{_study_of(row).study_instance_uid}"


def _series_url(row, answer: Answer) -> str:
    return f"{_study_url(row, answer)}/series/{_series_of(row).series_instance_uid}"


def _availability(row, _answer: Answer) -> str:
    # Evicted studies are still answered from the index and come back from S3 on retrieval.
    return "NEARLINE" if _study_of(row).evicted_at is not None else "ONLINE"


def _a(keyword: str, level: Level, field: str, match: Match | None, value=None) -> Attribute:
    if value is None:
        path = field.split("__")

        def value(row, _answer, path=path, level=level):
            target = {Level.STUDY: _study_of, Level.SERIES: _series_of, Level.INSTANCE: lambda r: r}[level](row)
            for part in path:
                target = getattr(target, part)
            return target

    return Attribute(keyword=keyword, level=level, field=field, match=match, value=value)


_ST, _SE, _IN = Level.STUDY, Level.SERIES, Level.INSTANCE
ATTRIBUTES: tuple[Attribute, ...] = (
    _a("StudyDate", _ST, "study_date", Match.DATE),
    _a("StudyTime", _ST, "study_time", Match.TIME),
    _a("AccessionNumber", _ST, "accession_number", Match.STRING),
    _a("InstanceAvailability", _ST, "", None, _availability),
    _a("ModalitiesInStudy", _ST, "modalities", Match.MODALITIES),
    _a("ReferringPhysicianName", _ST, "referring_physician", Match.PERSON_NAME),
    _a("StudyDescription", _ST, "study_description", Match.STRING),
    _a("PatientName", _ST, "patient__patient_name", Match.PERSON_NAME),
    _a("PatientID", _ST, "patient__patient_id", Match.STRING),
    _a("PatientBirthDate", _ST, "patient__birth_date", Match.DATE),
    _a("PatientSex", _ST, "patient__sex", Match.STRING),
    _a("StudyInstanceUID", _ST, "study_instance_uid", Match.UID_LIST),
    _a("NumberOfStudyRelatedSeries", _ST, "series_count", None),
    _a("NumberOfStudyRelatedInstances", _ST, "instance_count", None),
    _a("BodyPartExamined", _SE, "body_part", Match.STRING),
    _a("Modality", _SE, "modality", Match.CODE_LIST),
    _a("SeriesInstanceUID", _SE, "series_instance_uid", Match.UID_LIST),
    _a("SeriesNumber", _SE, "series_number", Match.INTEGER),
    _a("SeriesDescription", _SE, "series_description", Match.STRING),
    _a("NumberOfSeriesRelatedInstances", _SE, "instance_count", None),
    _a("SOPClassUID", _IN, "sop_class_uid", Match.UID_LIST),
    _a("SOPInstanceUID", _IN, "sop_instance_uid", Match.UID_LIST),
    _a("InstanceNumber", _IN, "instance_number", Match.INTEGER),
    _a("AvailableTransferSyntaxUID", _IN, "transfer_syntax_uid", None),
)
_BY_KEYWORD = {attribute.keyword: attribute for attribute in ATTRIBUTES}
_LEVEL_ORDER = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}
# RetrieveURL belongs to whichever level is being answered.
_RETRIEVE_URL = "RetrieveURL"
_RETRIEVE_URL_TAG = f"{tag_for_keyword(_RETRIEVE_URL):08X}"

# Returned without being asked for (PS3.18 tables 6.7.1-2, -2a, -2b, plus the description and counts
# that every study list shows). Study attributes ride along on series and instance answers when the
# search spans studies, as the standard asks.
DEFAULT_KEYWORDS = {
    Level.STUDY: (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceAvailability",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "StudyDescription",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: (
        "Modality",
        "SeriesInstanceUID",
        "SeriesNumber",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
        "BodyPartExamined",
        "StudyInstanceUID",
    ),
    Level.INSTANCE: (
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceAvailability",
        "InstanceNumber",
        "AvailableTransferSyntaxUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
    ),
}
CONTROL_PARAMETERS = frozenset({"includefield", "limit", "offset", "fuzzymatching"})
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE_RE = re.compile(r"^\d{8}$")
_TIME_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_HEX_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")


@dataclass(frozen=True)
class Query:
    level: Level
    filters: dict[str, list[str]]
    include: frozenset[str]
    include_all: bool
    limit: int
    offset: int
    fuzzy: bool


def _keyword(name: str) -> str | None:
    """A query key as a DICOM keyword (keywords and 8-digit hex tags both accepted), or None."""
    if _HEX_TAG_RE.fullmatch(name):
        return keyword_for_tag(int(name, 16)) or None
    return name if tag_for_keyword(name) is not None else None


def _split(values: Iterable[str]) -> list[str]:
    return [part.strip() for value in values for part in re.split(r"[,\\]", value) if part.strip()]


MAX_OFFSET = 1_000_000_000


def _non_negative(name: str, raw: str | None, *, default: int, maximum: int | None = None) -> int:
    if raw is None or raw == "":
        return default
    # ASCII digits only ("²" is a digit to str.isdigit), and no more than fit a database OFFSET.
    ceiling = maximum if maximum is not None else MAX_OFFSET
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10) or int(raw) > ceiling or (maximum and int(raw) == 0):
        bound = f"from 1 to {maximum}" if maximum is not None else f"from 0 to {MAX_OFFSET}"
        raise QueryError(f"{name} must be an integer {bound}.")
    return int(raw)


def query_parse(params, *, level: Level) -> Query:
    """Validate the query string of a QIDO-RS request at `level`; QueryError names what is wrong."""
    allowed = {a.keyword for a in ATTRIBUTES if a.match and _LEVEL_ORDER[a.level] <= _LEVEL_ORDER[level]}
    filters: dict[str, list[str]] = {}
    unknown: list[str] = []
    for name, values in params.lists():
        if any("\x00" in value for value in values):
            raise QueryError(f"{name} must not contain a NUL character.")
        if name in CONTROL_PARAMETERS:
            continue
        keyword = _keyword(name)
        if keyword is None or keyword not in allowed:
            unknown.append(name)
            continue
        filters.setdefault(keyword, []).extend(values)
    if unknown:
        raise QueryError(
            f"Unsupported QIDO-RS parameters for /{level.value}: {', '.join(sorted(unknown))}. "
            f"Matching is possible on: {', '.join(sorted(allowed))}."
        )
    include: set[str] = set()
    include_all = False
    bad_fields: list[str] = []
    for field in _split(params.getlist("includefield")):
        if field.lower() == "all":
            include_all = True
        elif (keyword := _keyword(field)) is not None:
            include.add(keyword)
        else:
            bad_fields.append(field)
    if bad_fields:
        raise QueryError(f"includefield names unknown DICOM attributes: {', '.join(sorted(bad_fields))}.")
    maximum = settings.READROOM_DICOMWEB_MAX_LIMIT
    fuzzy = params.get("fuzzymatching", "false").lower()
    if fuzzy not in ("true", "false"):
        raise QueryError("fuzzymatching must be true or false.")
    return Query(
        level=level,
        filters=filters,
        include=frozenset(include),
        include_all=include_all,
        limit=_non_negative("limit", params.get("limit"), default=maximum, maximum=maximum),
        offset=_non_negative("offset", params.get("offset"), default=0),
        fuzzy=fuzzy == "true",
    )


def _literal_regex(value: str, *, many: str = ".*", one: str = ".") -> str:
    # PostgreSQL ARE: a backslash before a non-alphanumeric character makes it literal, and
    # alphanumerics (any script) are literal already, so this escapes without a character list.
    # The wildcards * and ? become `many` and `one`.
    out = []
    for character in value:
        if character == "*":
            out.append(many)
        elif character == "?":
            out.append(one)
        elif character.isalnum():
            out.append(character)
        else:
            out.append("\\" + character)
    return "".join(out)


def _code_pattern_condition(path: str, pattern: str, *, array: bool) -> Q:
    """A code string with wildcards (`M*` finds MR and MG); for a list of codes, any one of them matching.

    Codes hold no comma (CS: capitals, digits, space, underscore), so a list is matched as its comma-joined text
    with wildcards that never cross a comma.
    """
    regex = "".join(
        "[^,]*" if character == "*" else "[^,]" if character == "?" else re.escape(character) for character in pattern
    )
    if not array:
        return Q(**{f"{path}__regex": f"^{regex}$"})
    joined = Func(F(path), Value(","), function="array_to_string", output_field=CharField())
    return Q(Regex(joined, f"(^|,){regex}(,|$)"))


def _string_condition(path: str, value: str, *, case_insensitive: bool, fuzzy: bool) -> Q | None:
    if value in ("", "*"):
        return None
    if case_insensitive and ("*" in value or "?" in value):
        # A person name matches when one of its values or component groups does ("山田*" finds
        # "Yamada^Tarou=山田^太郎"): wildcards stay within one.
        within = _literal_regex(value, many="[^=\\\\]*", one="[^=\\\\]")
        return Q(**{f"{path}__iregex": f"(^|[=\\\\]){within}([=\\\\]|$)"})
    if "*" in value or "?" in value:
        return Q(**{f"{path}__regex": f"^{_literal_regex(value)}$"})
    if fuzzy and case_insensitive:
        # Fuzzy person-name matching: the value starts any name component ("smi" finds "Smith^John").
        return Q(**{f"{path}__iregex": f"(^|[\\^ =]){_literal_regex(value)}"})
    if case_insensitive:
        # A person name matches one of its values or component groups whole ("Yamada^Tarou" finds
        # "Yamada^Tarou=山田^太郎").
        return Q(**{f"{path}__iregex": f"(^|[=\\\\]){_literal_regex(value)}([=\\\\]|$)"})
    return Q(**{f"{path}__exact": value})


def _range(keyword: str, value: str, pattern: re.Pattern, example: str) -> tuple[str | None, str | None]:
    low, dash, high = value.partition("-")
    if not dash:
        high = low
    if (low and not pattern.fullmatch(low)) or (high and not pattern.fullmatch(high)) or not (low or high):
        raise QueryError(f"{keyword} must be {example} or a range {example}-{example} (either end may be open).")
    return low or None, high or None


def _condition(attribute: Attribute, path: str, values: list[str], *, fuzzy: bool) -> Q | None:
    """One OR-ed condition over the repeated values of one parameter (None: universal match)."""
    combined: Q | None = None
    match = attribute.match
    if match in (Match.UID_LIST, Match.CODE_LIST, Match.MODALITIES):
        items = _split(values)
        if not items:
            return None
        if match == Match.UID_LIST:
            if bad := [item for item in items if len(item) > 64 or not _UID_RE.fullmatch(item)]:
                raise QueryError(f"{attribute.keyword} holds values that are not UIDs: {', '.join(bad[:3])}.")
            return Q(**{f"{path}__in": items})
        codes = [item.upper() for item in items]
        if "*" in codes:
            return None
        patterns = [code for code in codes if "*" in code or "?" in code]
        exact = [code for code in codes if code not in patterns]
        combined = Q(**{f"{path}__{'overlap' if match == Match.MODALITIES else 'in'}": exact}) if exact else Q()
        for pattern in patterns:
            combined |= _code_pattern_condition(path, pattern, array=match == Match.MODALITIES)
        return combined
    for value in values:
        value = value.strip()
        if match in (Match.STRING, Match.PERSON_NAME):
            condition = _string_condition(
                path, value, case_insensitive=match == Match.PERSON_NAME, fuzzy=fuzzy and match == Match.PERSON_NAME
            )
        elif match == Match.INTEGER:
            if value == "":
                condition = None
            elif not re.fullmatch(r"-?\d+", value):
                raise QueryError(f"{attribute.keyword} must be an integer.")
            else:
                condition = Q(**{path: int(value)})
        elif value == "":
            condition = None
        elif match == Match.DATE:
            # DA is YYYYMMDD, so comparing the strings orders the dates.
            low, high = _range(attribute.keyword, value, _DATE_RE, "YYYYMMDD")
            condition = Q(**{f"{path}__gte": low} if low else {}) & Q(**{f"{path}__lte": high} if high else {})
            condition &= ~Q(**{path: ""})
        else:
            low, high = _range(attribute.keyword, value, _TIME_RE, "HHMMSS")
            # A partial upper bound ("10" or "1030") covers the whole hour or minute it names.
            high = (high + "595959"[len(high) :] + ".999999")[:13] if high and "." not in high else high
            condition = Q(**{f"{path}__gte": low} if low else {}) & Q(**{f"{path}__lte": high} if high else {})
            condition &= ~Q(**{path: ""})
        if condition is None:
            return None
        combined = condition if combined is None else combined | condition
    return combined


_MODEL = {Level.STUDY: Study, Level.SERIES: Series, Level.INSTANCE: Instance}
_PREFIX = {
    # Path from each level's model to the model holding an attribute of the given level.
    (Level.STUDY, Level.STUDY): "",
    (Level.SERIES, Level.STUDY): "study__",
    (Level.SERIES, Level.SERIES): "",
    (Level.INSTANCE, Level.STUDY): "study__",
    (Level.INSTANCE, Level.SERIES): "series__",
    (Level.INSTANCE, Level.INSTANCE): "",
}
_ORDER = {
    Level.STUDY: ("-study_date", "-study_time", "-pk"),
    Level.SERIES: ("study_id", "series_number", "pk"),
    Level.INSTANCE: ("series__series_number", "series_id", "instance_number", "pk"),
}
_RELATED = {
    Level.STUDY: ("patient",),
    Level.SERIES: ("study", "study__patient"),
    Level.INSTANCE: ("series", "study", "study__patient"),
}


def query_rows(
    query: Query, *, tenant: Tenant, study: Study | None = None, series: Series | None = None
) -> QuerySet[Model]:
    """The tenant's matching index rows, in a stable order (the caller slices limit/offset)."""
    model = _MODEL[query.level]
    rows = model.objects.filter(tenant=tenant).select_related(*_RELATED[query.level])
    if study is not None:
        rows = rows.filter(**({"pk": study.pk} if query.level == Level.STUDY else {"study": study}))
    if series is not None:
        rows = rows.filter(series=series)
    for keyword, values in query.filters.items():
        attribute = _BY_KEYWORD[keyword]
        path = _PREFIX[(query.level, attribute.level)] + attribute.field
        condition = _condition(attribute, path, values, fuzzy=query.fuzzy)
        if condition is not None:
            rows = rows.filter(condition)
    return rows.order_by(*_ORDER[query.level])


_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _element(vr: str, value: Any) -> dict:
    if value is None or value == "" or value == []:
        return {"vr": vr}
    if vr == "PN":
        # Each value (backslash-separated) of up to three component groups (PS3.18 F.2.2): "Yamada^Tarou=山田^太郎".
        names = []
        for name in str(value).split("\\"):
            groups = dict(zip(_PN_GROUPS, name.split("=")[: len(_PN_GROUPS)], strict=False))
            names.append({group: text for group, text in groups.items() if text})
        return {"vr": vr, "Value": names}
    if isinstance(value, list):
        return {"vr": vr, "Value": value}
    return {"vr": vr, "Value": [value]}


def answer_keywords(query: Query, *, spans_studies: bool, spans_series: bool) -> list[str]:
    """Which attributes each row of this answer carries: a search above the level asked for (the instances of
    a study, of every study) carries the default attributes of the levels it spans too, as PS3.18 asks."""
    level_rank = _LEVEL_ORDER[query.level]
    available = [a.keyword for a in ATTRIBUTES if _LEVEL_ORDER[a.level] <= level_rank]
    if query.include_all:
        return available
    wanted = set(DEFAULT_KEYWORDS[query.level]) | (query.include & set(available)) | set(query.filters)
    if spans_studies and query.level != Level.STUDY:
        wanted |= set(DEFAULT_KEYWORDS[Level.STUDY])
    if spans_series and query.level == Level.INSTANCE:
        wanted |= set(DEFAULT_KEYWORDS[Level.SERIES])
    return [keyword for keyword in available if keyword in wanted]


def row_as_dicom_json(row, *, level: Level, keywords: list[str], answer: Answer) -> dict:
    dataset: dict[str, dict] = {"00080005": {"vr": "CS", "Value": ["ISO_IR 192"]}}
    for keyword in keywords:
        attribute = _BY_KEYWORD[keyword]
        value = attribute.value(row, answer)
        if attribute.vr == "IS" and value is not None:
            value = int(value)
        dataset[attribute.tag] = _element(attribute.vr, value)
    url = {Level.STUDY: _study_url, Level.SERIES: _series_url}.get(level)
    retrieve_url = url(row, answer) if url else f"{_series_url(row, answer)}/instances/{row.sop_instance_uid}"
    dataset[_RETRIEVE_URL_TAG] = _element("UR", retrieve_url)
    return dict(sorted(dataset.items()))
