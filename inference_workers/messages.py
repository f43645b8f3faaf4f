"""The one versioned schema of the messages between the Django side and the inference workers.

Both directions are plain JSON-able dicts with a ``schema_version``; ``from_dict`` refuses anything
unexpected and names the field, so a producer bug surfaces at the boundary instead of as a wrong
result. Nothing here may carry patient identity: jobs reference a de-identified volume through a
short-lived URL, results carry only measurements. Unknown fields are refused for the same reason
(a field nobody validates is where a patient name would slip through).

Input volume (``input_url``, an ``.npz``): ``voxels`` int16 indexed (z, y, x), HU for CT and pixel
values (higher = more attenuation) for CR/DX, where a radiograph has z = 1; ``spacing`` (z, y, x) in
mm; ``orientation`` the 6 DICOM direction cosines (row, then column); ``origin`` the patient
position of voxel (0, 0, 0) in mm. Voxel (k, j, i) lies at origin + i*sx*row + j*sy*column +
k*sz*(row x column), so the Django side orders slices along the normal before writing it.

Outputs: every job carries a ``findings`` URL; which others it needs depends on the model and is
declared in its bundle (``configs/metadata.json`` ``output_urls``: ``mask`` for ct_focal_lesion,
``heatmap`` for dx_chest_triage). The worker refuses a job that lacks one, or names one the model
never writes, with a failed result naming that URL.

``mask.npz`` (compressed): ``mask`` uint8, only the box around the findings (empty when there are none),
``offset`` where that box starts in the input grid (z, y, x), ``shape`` the input grid's size, and the
input's ``spacing``, ``orientation`` and ``origin``. ``heatmap.npz`` (compressed): ``heatmap`` on the
model's own grid with its ``spacing``, ``orientation`` and ``origin``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

JOB_SCHEMA_VERSION = 1
RESULT_SCHEMA_VERSION = 1

STATUS_OK = "ok"
STATUS_FAILED = "failed"
OUTPUT_NAMES = ("mask", "findings", "heatmap")
# Required of every job; the rest depend on the model (see the module docstring).
REQUIRED_OUTPUTS = ("findings",)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class MessageError(ValueError):
    """A message that does not follow the schema; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _require_mapping(data: Any, name: str) -> dict:
    if not isinstance(data, dict):
        raise MessageError(name, f"must be an object, got {type(data).__name__}")
    return data


def _check_keys(data: dict, *, allowed: set[str], required: set[str], prefix: str = "") -> None:
    for key in sorted(required - data.keys()):
        raise MessageError(prefix + key, "is required")
    for key in sorted(data.keys() - allowed):
        raise MessageError(prefix + str(key), "is not part of the schema")


def _string(value: Any, name: str, *, pattern: re.Pattern | None = None, max_length: int = 4096) -> str:
    if not isinstance(value, str) or not value:
        raise MessageError(name, "must be a non-empty string")
    if len(value) > max_length:
        raise MessageError(name, f"is longer than {max_length} characters")
    if pattern is not None and not pattern.match(value):
        raise MessageError(name, f"has an invalid format: {value!r}")
    return value


def _url(value: Any, name: str) -> str:
    url = _string(value, name, max_length=8192)
    if not url.startswith(("https://", "http://")):
        raise MessageError(name, "must be an http(s) URL")
    return url


def _number(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MessageError(name, "must be a finite number")
    if minimum is not None and value < minimum:
        raise MessageError(name, f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise MessageError(name, f"must be <= {maximum}")
    return float(value)


def _vector(value: Any, name: str, length: int) -> list[float]:
    if not isinstance(value, list | tuple) or len(value) != length:
        raise MessageError(name, f"must be a list of {length} numbers")
    return [_number(item, f"{name}[{index}]") for index, item in enumerate(value)]


def _schema_version(data: dict, expected: int) -> None:
    version = data.get("schema_version")
    if version != expected or isinstance(version, bool):
        raise MessageError("schema_version", f"must be {expected}, got {version!r}")


def idempotency_key(*, study_version_key: str, model_name: str, model_version: str) -> str:
    """A study version is analysed once per model version: the key both sides deduplicate on."""
    return f"{study_version_key}|{model_name}|{model_version}"


@dataclass(frozen=True)
class InferenceJob:
    """Django side -> worker: run one model on one de-identified volume and write outputs to presigned URLs."""

    job_id: str
    study_version_key: str
    model_name: str
    model_version: str
    input_url: str
    output_urls: dict[str, str]
    # Unix seconds when the Django side dispatched it: the backlog's oldest-job age comes from here.
    dispatched_at: float = 0.0
    schema_version: int = JOB_SCHEMA_VERSION
    KIND: ClassVar[str] = "inference_job"

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(
            study_version_key=self.study_version_key, model_name=self.model_name, model_version=self.model_version
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["idempotency_key"] = self.idempotency_key
        return data

    @classmethod
    def from_dict(cls, data: Any) -> InferenceJob:
        data = _require_mapping(data, "job")
        _schema_version(data, JOB_SCHEMA_VERSION)
        fields = {"job_id", "study_version_key", "model_name", "model_version", "input_url", "output_urls"}
        _check_keys(data, allowed=fields | {"schema_version", "idempotency_key", "dispatched_at"}, required=fields)
        output_urls = _require_mapping(data["output_urls"], "output_urls")
        _check_keys(output_urls, allowed=set(OUTPUT_NAMES), required=set(REQUIRED_OUTPUTS), prefix="output_urls.")
        job = cls(
            job_id=_string(data["job_id"], "job_id", pattern=_JOB_ID),
            # An opaque key (e.g. a hash of the study UID and its completion version), never a patient identifier.
            study_version_key=_string(data["study_version_key"], "study_version_key", pattern=_JOB_ID),
            model_name=_string(data["model_name"], "model_name", pattern=_NAME),
            model_version=_string(data["model_version"], "model_version", pattern=_NAME),
            input_url=_url(data["input_url"], "input_url"),
            output_urls={name: _url(url, f"output_urls.{name}") for name, url in output_urls.items()},
            dispatched_at=_number(data.get("dispatched_at", 0.0), "dispatched_at", minimum=0.0),
        )
        if "idempotency_key" in data and data["idempotency_key"] != job.idempotency_key:
            raise MessageError("idempotency_key", "does not match study_version_key, model_name and model_version")
        return job


@dataclass(frozen=True)
class Finding:
    """One lesion: where (patient mm and native voxel), how big, how sure, and whether it is critical."""

    label: str
    confidence: float
    centre_mm: tuple[float, float, float]
    diameter_mm: float
    volume_ml: float
    critical: bool = False
    centre_voxel: tuple[float, float, float] | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["centre_mm"] = list(self.centre_mm)
        data["centre_voxel"] = None if self.centre_voxel is None else list(self.centre_voxel)
        return data

    @classmethod
    def from_dict(cls, data: Any, *, name: str = "finding") -> Finding:
        data = _require_mapping(data, name)
        required = {"label", "confidence", "centre_mm", "diameter_mm", "volume_ml"}
        _check_keys(data, allowed=required | {"critical", "centre_voxel"}, required=required, prefix=f"{name}.")
        critical = data.get("critical", False)
        if not isinstance(critical, bool):
            raise MessageError(f"{name}.critical", "must be true or false")
        voxel = data.get("centre_voxel")
        return cls(
            label=_string(data["label"], f"{name}.label", pattern=_NAME),
            confidence=_number(data["confidence"], f"{name}.confidence", minimum=0.0, maximum=1.0),
            centre_mm=tuple(_vector(data["centre_mm"], f"{name}.centre_mm", 3)),
            diameter_mm=_number(data["diameter_mm"], f"{name}.diameter_mm", minimum=0.0),
            volume_ml=_number(data["volume_ml"], f"{name}.volume_ml", minimum=0.0),
            critical=critical,
            centre_voxel=None if voxel is None else tuple(_vector(voxel, f"{name}.centre_voxel", 3)),
        )


@dataclass(frozen=True)
class InferenceResult:
    """Worker -> Django side: the outcome of one job; outputs are the keys written through the job's URLs."""

    job_id: str
    idempotency_key: str
    model_name: str
    model_version: str
    status: str
    error: str = ""
    findings: tuple[Finding, ...] = ()
    outputs: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    device: str = ""
    # Image-level probabilities by label (e.g. {"nodule_opacity": 0.03}), reported with or without a finding.
    scores: dict[str, float] = field(default_factory=dict)
    schema_version: int = RESULT_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in (STATUS_OK, STATUS_FAILED):
            raise MessageError("status", f"must be {STATUS_OK!r} or {STATUS_FAILED!r}")
        if self.status == STATUS_FAILED and not self.error:
            raise MessageError("error", "is required when status is 'failed'")
        for name, score in self.scores.items():
            _string(name, "scores", pattern=_NAME)
            _number(score, f"scores.{name}", minimum=0.0, maximum=1.0)

    @property
    def critical(self) -> bool:
        return any(finding.critical for finding in self.findings)

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "job_id": self.job_id,
            "idempotency_key": self.idempotency_key,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "status": self.status,
            "error": self.error,
            "findings": [finding.to_dict() for finding in self.findings],
            "outputs": list(self.outputs),
            "timings": dict(self.timings),
            "scores": dict(self.scores),
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, data: Any) -> InferenceResult:
        data = _require_mapping(data, "result")
        _schema_version(data, RESULT_SCHEMA_VERSION)
        required = {"job_id", "idempotency_key", "model_name", "model_version", "status"}
        optional = {"schema_version", "error", "findings", "outputs", "timings", "scores", "device"}
        _check_keys(data, allowed=required | optional, required=required)
        findings = data.get("findings", [])
        if not isinstance(findings, list):
            raise MessageError("findings", "must be a list")
        outputs = data.get("outputs", [])
        if not isinstance(outputs, list) or any(name not in OUTPUT_NAMES for name in outputs):
            raise MessageError("outputs", f"must be a list of {', '.join(OUTPUT_NAMES)}")
        timings = _require_mapping(data.get("timings", {}), "timings")
        scores = _require_mapping(data.get("scores", {}), "scores")
        for name in scores:
            _string(name, "scores", pattern=_NAME)
        error = data.get("error", "")
        if not isinstance(error, str):
            raise MessageError("error", "must be a string")
        device = data.get("device", "")
        if not isinstance(device, str):
            raise MessageError("device", "must be a string")
        return cls(
            job_id=_string(data["job_id"], "job_id", pattern=_JOB_ID),
            idempotency_key=_string(data["idempotency_key"], "idempotency_key"),
            model_name=_string(data["model_name"], "model_name", pattern=_NAME),
            model_version=_string(data["model_version"], "model_version", pattern=_NAME),
            status=_string(data["status"], "status"),
            error=error,
            findings=tuple(Finding.from_dict(item, name=f"findings[{index}]") for index, item in enumerate(findings)),
            outputs=tuple(outputs),
            timings={str(key): _number(value, f"timings.{key}", minimum=0.0) for key, value in timings.items()},
            device=device,
            scores={name: _number(value, f"scores.{name}", minimum=0.0, maximum=1.0) for name, value in scores.items()},
        )
