// From a series' WADO-RS metadata to the ordered `wadors:` imageIds Cornerstone's DICOM image loader fetches.
import { type DicomJson, Tag, number, numbers, text } from "./dicomJson";

export interface SeriesImage {
  imageId: string;
  metadata: DicomJson;
  /** The frame of the instance (1-based; 1 for a single-frame image). */
  frame: number;
}

/** The DICOMweb root of a clinic, e.g. "/dicomweb/clinic-a" (no trailing slash). */
export function wadoRoot(slug: string): string {
  return `/dicomweb/${encodeURIComponent(slug)}`;
}

export function frameImageId(root: string, studyUid: string, seriesUid: string, sopUid: string, frame: number): string {
  return `wadors:${root}/studies/${studyUid}/series/${seriesUid}/instances/${sopUid}/frames/${frame}`;
}

/**
 * Position of a slice along the normal of its plane (mm), when ImagePositionPatient and
 * ImageOrientationPatient are present; used to order slices head to foot like a radiologist expects.
 */
export function slicePosition(metadata: DicomJson): number | undefined {
  return planePosition(numbers(metadata, Tag.ImagePositionPatient), numbers(metadata, Tag.ImageOrientationPatient))
    ?.value;
}

/**
 * Where a slice lies along its plane's normal (mm), named by the patient axis that normal is closest to:
 * Z for an axial slice, X for a sagittal one, Y for a coronal one (the origin's z alone would be the same
 * number on every slice of a sagittal or coronal series).
 */
export function planePosition(
  position: ArrayLike<number>,
  orientation: ArrayLike<number>,
): { axis: "X" | "Y" | "Z"; value: number } | undefined {
  if (position.length !== 3 || orientation.length !== 6) return undefined;
  const [rx, ry, rz, cx, cy, cz] = Array.from(orientation);
  const normal = [ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx];
  const value = position[0] * normal[0] + position[1] * normal[1] + position[2] * normal[2];
  const dominant = normal.map(Math.abs).indexOf(Math.max(...normal.map(Math.abs)));
  return { axis: (["X", "Y", "Z"] as const)[dominant], value };
}

/** Instances ordered by slice position (descending: superior first for axial CT), else by InstanceNumber. */
export function sortInstances(instances: DicomJson[]): DicomJson[] {
  const positions = instances.map(slicePosition);
  const allPositioned = positions.every((value) => value !== undefined);
  return instances
    .map((metadata, index) => ({ metadata, index, position: positions[index] }))
    .sort((a, b) => {
      if (allPositioned && a.position !== b.position) return (b.position as number) - (a.position as number);
      const byNumber = (number(a.metadata, Tag.InstanceNumber) ?? 0) - (number(b.metadata, Tag.InstanceNumber) ?? 0);
      return byNumber !== 0 ? byNumber : a.index - b.index;
    })
    .map((entry) => entry.metadata);
}

/**
 * The instances with the lowest and the highest InstanceNumber (QIDO-RS rows): the two ends of a series whose
 * slices are numbered along the scan, one of which `sortInstances` puts first once their positions are known.
 */
export function edgeInstances(instances: DicomJson[]): DicomJson[] {
  const numbered = instances.filter((instance) => number(instance, Tag.InstanceNumber) !== undefined);
  if (numbered.length === 0) return instances.slice(0, 1);
  const byNumber = [...numbered].sort(
    (a, b) => (number(a, Tag.InstanceNumber) as number) - (number(b, Tag.InstanceNumber) as number),
  );
  const lowest = byNumber[0];
  const highest = byNumber[byNumber.length - 1];
  return lowest === highest ? [lowest] : [lowest, highest];
}

/** One imageId per frame (multi-frame instances give several), in display order. */
export function seriesImages(root: string, instances: DicomJson[]): SeriesImage[] {
  const images: SeriesImage[] = [];
  for (const metadata of sortInstances(instances)) {
    const study = text(metadata, Tag.StudyInstanceUID);
    const series = text(metadata, Tag.SeriesInstanceUID);
    const sop = text(metadata, Tag.SOPInstanceUID);
    if (!study || !series || !sop) continue;
    const frames = Math.max(1, number(metadata, Tag.NumberOfFrames) ?? 1);
    for (let frame = 1; frame <= frames; frame += 1) {
      images.push({ imageId: frameImageId(root, study, series, sop, frame), metadata, frame });
    }
  }
  return images;
}

/** The order to fetch a stack: the slice shown first, then outwards from it so scrolling finds loaded slices. */
export function loadOrder(count: number, start: number): number[] {
  const order: number[] = [];
  if (count <= 0) return order;
  const first = Math.min(Math.max(start, 0), count - 1);
  order.push(first);
  for (let step = 1; order.length < count; step += 1) {
    if (first + step < count) order.push(first + step);
    if (first - step >= 0) order.push(first - step);
  }
  return order;
}
