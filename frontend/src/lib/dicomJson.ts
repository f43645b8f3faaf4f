// Reading DICOM JSON (PS3.18 F.2) as the DICOMweb service returns it: tag "GGGGEEEE" -> { vr, Value }.

export type DicomJsonValue = string | number | Record<string, unknown> | { Alphabetic?: string };
export interface DicomJsonAttribute {
  vr: string;
  Value?: DicomJsonValue[];
  BulkDataURI?: string;
  InlineBinary?: string;
}
export type DicomJson = Record<string, DicomJsonAttribute>;

export const Tag = {
  StudyDate: "00080020",
  Modality: "00080060",
  StudyDescription: "00081030",
  SeriesDescription: "0008103E",
  PatientName: "00100010",
  PatientID: "00100020",
  StudyInstanceUID: "0020000D",
  SeriesInstanceUID: "0020000E",
  SOPInstanceUID: "00080018",
  SeriesNumber: "00200011",
  InstanceNumber: "00200013",
  ImagePositionPatient: "00200032",
  ImageOrientationPatient: "00200037",
  NumberOfFrames: "00280008",
  SharedFunctionalGroupsSequence: "52009229",
  PerFrameFunctionalGroupsSequence: "52009230",
  PlanePositionSequence: "00209113",
  NumberOfSeriesRelatedInstances: "00201209",
} as const;

export function first(data: DicomJson, tag: string): DicomJsonValue | undefined {
  return data[tag]?.Value?.[0];
}

export function text(data: DicomJson, tag: string): string {
  const value = first(data, tag);
  if (value === undefined || value === null) return "";
  if (typeof value === "object") return "Alphabetic" in value ? String(value.Alphabetic ?? "") : "";
  return String(value);
}

export function number(data: DicomJson, tag: string): number | undefined {
  const value = first(data, tag);
  const parsed = typeof value === "number" ? value : typeof value === "string" ? Number(value) : NaN;
  return Number.isFinite(parsed) ? parsed : undefined;
}

export function numbers(data: DicomJson, tag: string): number[] {
  return (data[tag]?.Value ?? []).map((value) => Number(value)).filter((value) => Number.isFinite(value));
}

/** An item of a sequence attribute (the first by default), when there is one. */
export function item(data: DicomJson | undefined, tag: string, index = 0): DicomJson | undefined {
  const value = data?.[tag]?.Value?.[index];
  return value !== undefined && typeof value === "object" ? (value as DicomJson) : undefined;
}

/**
 * ImagePositionPatient of one frame (1-based): in an enhanced multi-frame image the frame's PlanePositionSequence
 * in its per-frame (or the shared) functional groups, else the instance's own. The functional groups come first:
 * they are what the standard defines for such images, and Cornerstone's loader writes the last frame it combined
 * into the instance's top level of the same metadata object.
 */
export function framePosition(data: DicomJson, frame: number): [number, number, number] | undefined {
  const groups = [item(data, Tag.PerFrameFunctionalGroupsSequence, frame - 1), item(data, Tag.SharedFunctionalGroupsSequence)];
  for (const group of groups) {
    const position = numbers(item(group, Tag.PlanePositionSequence) ?? {}, Tag.ImagePositionPatient);
    if (position.length === 3) return position as [number, number, number];
  }
  const own = numbers(data, Tag.ImagePositionPatient);
  return own.length === 3 ? (own as [number, number, number]) : undefined;
}

/** "Doe^Jane" -> "Doe, Jane" (family name first, as a reading room lists patients). */
export function personName(data: DicomJson, tag: string): string {
  const raw = text(data, tag);
  const [family = "", given = ""] = raw.split("^");
  return given ? `${family}, ${given}` : family;
}

/** "20260301" -> "2026-03-01"; anything else is returned unchanged. */
export function isoDate(value: string): string {
  return /^\d{8}$/.test(value) ? `${value.slice(0, 4)}-${value.slice(4, 6)}-${value.slice(6, 8)}` : value;
}
