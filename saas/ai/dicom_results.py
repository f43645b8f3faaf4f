"""AI results as DICOM any viewer or PACS shows: SEG for masks, SR TID 1500 for findings, fractional SEG for heatmaps.

Built with highdicom from the analysed series' own datasets. UIDs are derived from the analysis id, so
recording the same result twice (a redelivered message) builds the same objects, which Orthanc then
reports as already stored instead of keeping two copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from scipy import ndimage

MANUFACTURER = "ReadRoom"
DEVICE_SERIAL = "readroom-ai"
SERIES_DESCRIPTION = "AI generated — not for clinical use"
# Series numbers well above what modalities use, so the AI series sort after the images.
SEG_SERIES_NUMBER = 9001
SR_SERIES_NUMBER = 9002
MAP_SERIES_NUMBER = 9003  # the heatmap
# No standard code names an algorithm's confidence; a local coding scheme says exactly that (PS3.16 8.2).
CONFIDENCE_CODE = hd.sr.CodedConcept(value="RR-CONF", scheme_designator="99READROOM", meaning="AI confidence")
UNIT_MM = hd.sr.CodedConcept(value="mm", scheme_designator="UCUM", meaning="millimeter")
UNIT_ML = hd.sr.CodedConcept(value="ml", scheme_designator="UCUM", meaning="milliliter")
UNIT_ONE = hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")
LESION_TYPE = hd.sr.CodedConcept(value="52988006", scheme_designator="SCT", meaning="Lesion")
CHEST_XRAY_PROCEDURE = hd.sr.CodedConcept(value="36554-4", scheme_designator="LN", meaning="XR Chest Single view")
NODULE_TYPE = hd.sr.CodedConcept(value="27925004", scheme_designator="SCT", meaning="Nodule")


@dataclass(frozen=True)
class BuiltObjects:
    datasets: list[pydicom.Dataset]
    seg_sop_instance_uid: str = ""
    sr_sop_instance_uid: str = ""
    map_sop_instance_uid: str = ""
    # finding index -> segment number in the SEG (0 when a finding has no outline).
    segment_numbers: tuple[int, ...] = ()


def _uid(analysis_id: str, purpose: str) -> str:
    return generate_uid(entropy_srcs=[analysis_id, purpose])


def _algorithm(model_name: str, model_version: str) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=model_name, family=codes.cid7162.ArtificialIntelligence, version=model_version
    )


def _seg_identity(analysis_id: str, model_name: str, model_version: str, *, purpose: str, series_number: int) -> dict:
    """What every AI SEG says about itself: stable UIDs, the model as device, the not-for-clinical-use series."""
    return {
        "series_instance_uid": _uid(analysis_id, f"{purpose}-series"),
        "series_number": series_number,
        "sop_instance_uid": _uid(analysis_id, purpose),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": model_name,
        "software_versions": model_version,
        "device_serial_number": DEVICE_SERIAL,
        "series_description": SERIES_DESCRIPTION,
        "content_label": f"AI_{purpose.upper()}",
        "content_description": f"{model_name} {model_version} {purpose}, not for clinical use"[:64],
    }


def _segments_for_findings(mask: np.ndarray, findings: list[dict]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Label the mask's connected components and number them after the findings they belong to.

    Each component goes to the finding whose centre is nearest its own centre of mass; components
    without a finding (none should exist) are dropped rather than shown unexplained.
    """
    labels = np.zeros(mask.shape, dtype=np.uint8)
    segment_numbers = [0] * len(findings)
    (box,) = ndimage.find_objects((mask > 0).astype(np.uint8)) or (None,)
    if box is None or not findings:
        return labels, tuple(segment_numbers)
    # Measured inside the box around the mask only: the full frames are mostly empty.
    inside = mask[box] > 0
    components, count = ndimage.label(inside, structure=np.ones((3, 3, 3)))
    start = np.asarray([axis.start for axis in box], dtype=float)
    centres = np.asarray([finding.get("centre_voxel") or (0, 0, 0) for finding in findings], dtype=float)
    owners: dict[int, list[int]] = {}
    for component, centre in enumerate(ndimage.center_of_mass(inside, components, range(1, count + 1)), start=1):
        nearest = int(np.argmin(np.linalg.norm(centres - (start + np.asarray(centre)), axis=1)))
        owners.setdefault(nearest, []).append(component)
    for segment, finding_index in enumerate(sorted(owners), start=1):
        labels[box][np.isin(components, owners[finding_index])] = segment
        segment_numbers[finding_index] = segment
    return labels, tuple(segment_numbers)


def _observation_context() -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[DEVICE_SERIAL]), name=MANUFACTURER
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _measurements(finding: dict, algorithm: hd.sr.AlgorithmIdentification, *, volume: bool) -> list[hd.sr.Measurement]:
    items = [
        hd.sr.Measurement(
            name=codes.SCT.Diameter, value=float(finding["diameter_mm"]), unit=UNIT_MM, algorithm_id=algorithm
        ),
        hd.sr.Measurement(
            name=CONFIDENCE_CODE, value=float(finding["confidence"]), unit=UNIT_ONE, algorithm_id=algorithm
        ),
    ]
    if volume:
        items.append(
            hd.sr.Measurement(
                name=codes.SCT.Volume, value=float(finding["volume_ml"]), unit=UNIT_ML, algorithm_id=algorithm
            )
        )
    return items


def volume_objects(
    *,
    analysis_id: str,
    model_name: str,
    model_version: str,
    source_datasets: list[pydicom.Dataset],
    mask: np.ndarray,
    findings: list[dict],
) -> BuiltObjects:
    """SEG (one segment per finding) and SR TID 1500 for a volumetric model; ``mask`` is (z, y, x) in source order."""
    if mask.shape != (len(source_datasets), int(source_datasets[0].Rows), int(source_datasets[0].Columns)):
        raise ValueError(f"mask shape {mask.shape} does not match the {len(source_datasets)} source slices")
    labels, segment_numbers = _segments_for_findings(mask, findings)
    algorithm = _algorithm(model_name, model_version)
    sr_algorithm = hd.sr.AlgorithmIdentification(name=model_name, version=model_version)
    datasets: list[pydicom.Dataset] = []
    seg = None
    if labels.any():
        slices = np.flatnonzero(labels.reshape(len(labels), -1).any(axis=1))
        descriptions = [
            hd.seg.SegmentDescription(
                segment_number=segment,
                segment_label=f"{findings[index]['label']} {segment}",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=LESION_TYPE,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=_uid(analysis_id, f"finding-{index}"),
                tracking_id=f"AI finding {segment}",
            )
            for index, segment in enumerate(segment_numbers)
            if segment
        ]
        seg = hd.seg.Segmentation(
            source_images=[source_datasets[index] for index in slices],
            pixel_array=labels[slices],
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=sorted(descriptions, key=lambda item: item.SegmentNumber),
            **_seg_identity(analysis_id, model_name, model_version, purpose="seg", series_number=SEG_SERIES_NUMBER),
        )
        datasets.append(seg)
    groups = []
    for index, finding in enumerate(findings):
        tracking = hd.sr.TrackingIdentifier(
            uid=_uid(analysis_id, f"finding-{index}"), identifier=f"AI finding {index + 1}"
        )
        if seg is not None and segment_numbers[index]:
            referenced = hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                segment_number=segment_numbers[index],
                source_series=hd.sr.SourceSeriesForSegmentation(source_datasets[0].SeriesInstanceUID),
            )
            groups.append(
                hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking,
                    referenced_segment=referenced,
                    finding_type=LESION_TYPE,
                    algorithm_id=sr_algorithm,
                    measurements=_measurements(finding, sr_algorithm, volume=True),
                )
            )
    sr = _report(
        analysis_id=analysis_id,
        evidence=[seg] if seg is not None else [source_datasets[0]],
        groups=groups,
        volume=True,
    )
    datasets.append(sr)
    return BuiltObjects(
        datasets=datasets,
        seg_sop_instance_uid=str(seg.SOPInstanceUID) if seg is not None else "",
        sr_sop_instance_uid=str(sr.SOPInstanceUID),
        segment_numbers=segment_numbers,
    )


def image_objects(
    *,
    analysis_id: str,
    model_name: str,
    model_version: str,
    source_dataset: pydicom.Dataset,
    heatmap: np.ndarray,
    findings: list[dict],
) -> BuiltObjects:
    """A fractional SEG of the heatmap (on the radiograph's own grid) and SR TID 1500 for a 2D classifier."""
    rows, columns = int(source_dataset.Rows), int(source_dataset.Columns)
    values = np.asarray(heatmap, dtype=np.float32).reshape(-1, *np.asarray(heatmap).shape[-2:])[0]
    if values.shape != (rows, columns):
        zoom = (rows / values.shape[0], columns / values.shape[1])
        values = ndimage.zoom(values, zoom, order=1)[:rows, :columns]
    values = np.clip(values, 0.0, 1.0).astype(np.float32)
    # A fractional SEG, not a Parametric Map: highdicom cannot build a Parametric Map over a projection
    # radiograph (no plane positions to index its frames by), and viewers overlay SEGs anyway.
    heat = hd.seg.Segmentation(
        source_images=[source_dataset],
        pixel_array=values,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label=f"{model_name} attention",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=NODULE_TYPE,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=_algorithm(model_name, model_version),
            )
        ],
        **_seg_identity(analysis_id, model_name, model_version, purpose="heatmap", series_number=MAP_SERIES_NUMBER),
    )
    sr_algorithm = hd.sr.AlgorithmIdentification(name=model_name, version=model_version)
    spacing = [float(v) for v in (getattr(source_dataset, "PixelSpacing", None) or source_dataset.ImagerPixelSpacing)]
    groups = []
    for index, finding in enumerate(findings):
        _, y, x = (float(v) for v in (finding.get("centre_voxel") or (0, rows / 2, columns / 2)))
        radius_px = max(1.0, float(finding["diameter_mm"]) / 2 / spacing[1])
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
            graphic_data=np.asarray([[x + 0.5, y + 0.5], [x + 0.5 + radius_px, y + 0.5]], dtype=float),
            source_image=hd.sr.SourceImageForRegion(
                referenced_sop_class_uid=source_dataset.SOPClassUID,
                referenced_sop_instance_uid=source_dataset.SOPInstanceUID,
            ),
        )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=_uid(analysis_id, f"finding-{index}"), identifier=f"AI finding {index + 1}"
                ),
                referenced_region=region,
                finding_type=NODULE_TYPE,
                algorithm_id=sr_algorithm,
                measurements=_measurements(finding, sr_algorithm, volume=False),
            )
        )
    sr = _report(analysis_id=analysis_id, evidence=[source_dataset], groups=groups, volume=False)
    return BuiltObjects(
        datasets=[heat, sr],
        sr_sop_instance_uid=str(sr.SOPInstanceUID),
        map_sop_instance_uid=str(heat.SOPInstanceUID),
        segment_numbers=tuple(0 for _ in findings),
    )


def _report(*, analysis_id: str, evidence: list[pydicom.Dataset], groups: list, volume: bool) -> pydicom.Dataset:
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion if volume else CHEST_XRAY_PROCEDURE,
        imaging_measurements=groups or None,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=_uid(analysis_id, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid(analysis_id, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=SERIES_DESCRIPTION,
    )
