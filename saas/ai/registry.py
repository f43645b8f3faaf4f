"""The models the platform can dispatch to, read from the bundles' own metadata (routing, version, pool).

The Django side never imports the workers' model code: it reads each bundle's `configs/metadata.json`
(the same file the worker loads), so the version it dispatches is the version the worker serves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from django.conf import settings


class RegistryError(RuntimeError):
    """A bundle's metadata is missing what dispatch needs; names the bundle and the field."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    pool: str
    modalities: tuple[str, ...]
    # Upper-case BodyPartExamined values the model accepts; "" accepts a series that does not say.
    body_parts: tuple[str, ...]
    min_slices: int
    max_slices: int
    # The outputs the worker writes for this model (mask.npz, findings.json, heatmap.npz).
    outputs: tuple[str, ...]
    # "volume": one 3D series (slices sorted along the normal); "image": one 2D image.
    input_kind: str
    # Radiograph projections the model reads (ViewPosition; "" accepts an image that does not say).
    view_positions: tuple[str, ...] = ()

    @property
    def queue(self) -> str:
        return f"inference.{self.pool}"

    def accepts(self, *, modality: str, body_part: str, instance_count: int) -> bool:
        return (
            modality.upper() in self.modalities
            and body_part.upper() in self.body_parts
            and self.min_slices <= instance_count <= self.max_slices
        )


def _spec(path: Path) -> ModelSpec:
    try:
        metadata = json.loads(path.read_text())
        routing = metadata["routing"]
        outputs = tuple(name.split(".", 1)[0] for name in metadata["outputs"])
        modalities = tuple(m.upper() for m in routing["modalities"])
        input_kind = routing.get("input", "volume" if "CT" in modalities or "MR" in modalities else "image")
        return ModelSpec(
            name=metadata["name"],
            version=metadata["version"],
            pool=routing.get("pool", "cpu"),
            modalities=modalities,
            body_parts=tuple(part.upper() for part in routing["body_parts"]),
            min_slices=int(routing.get("min_slices", 1)),
            # A 2D model reads a series of one image; a volume model a stack of them.
            max_slices=int(routing.get("max_slices", 1 if input_kind == "image" else 4000)),
            outputs=outputs,
            input_kind=input_kind,
            view_positions=tuple(view.upper() for view in routing.get("view_positions", ())),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RegistryError(f"{path}: unusable bundle metadata ({error.__class__.__name__}: {error})") from error


@cache
def model_specs() -> tuple[ModelSpec, ...]:
    """Every bundle under READROOM_AI_MODELS_DIR that is enabled in READROOM_AI_MODELS."""
    root = Path(settings.READROOM_AI_MODELS_DIR)
    specs = []
    for name in settings.READROOM_AI_MODELS:
        path = root / name / "configs" / "metadata.json"
        if not path.exists():
            raise RegistryError(f"READROOM_AI_MODELS names {name!r}, but {path} does not exist")
        specs.append(_spec(path))
    return tuple(specs)


def model_spec(name: str) -> ModelSpec | None:
    return next((spec for spec in model_specs() if spec.name == name), None)
