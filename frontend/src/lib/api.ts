// The few DICOMweb calls the viewer makes itself (Cornerstone's loader fetches the frames).
// The server decides what this user may see; a 404 here means "not found or not yours".
import type { DicomJson } from "./dicomJson";
import { multipartParts } from "./multipart";

export class HttpError extends Error {
  constructor(
    readonly status: number,
    url: string,
  ) {
    super(`${status} from ${url}`);
  }
}

async function getJson(url: string): Promise<DicomJson[]> {
  const response = await fetch(url, {
    credentials: "same-origin",
    headers: { Accept: "application/dicom+json" },
  });
  if (!response.ok) throw new HttpError(response.status, url);
  if (response.status === 204) return [];
  return (await response.json()) as DicomJson[];
}

export function studySeries(root: string, studyUid: string): Promise<DicomJson[]> {
  const fields = ["0008103E", "00080060", "00200011", "00201209", "00080020", "00100010", "00100020", "00081030"];
  return getJson(`${root}/studies/${studyUid}/series?${fields.map((field) => `includefield=${field}`).join("&")}`);
}

export function seriesMetadata(root: string, studyUid: string, seriesUid: string): Promise<DicomJson[]> {
  return getJson(`${root}/studies/${studyUid}/series/${seriesUid}/metadata`);
}

/** The study's instances as the index lists them (QIDO-RS, the first 1000), with their series' UID. */
export function studyInstanceList(root: string, studyUid: string): Promise<DicomJson[]> {
  return getJson(`${root}/studies/${studyUid}/instances?limit=1000`);
}

/** One instance's WADO-RS metadata (a list of one): cheap for the image store, unlike a whole series'. */
export function instanceMetadata(root: string, studyUid: string, seriesUid: string, sopUid: string): Promise<DicomJson[]> {
  return getJson(`${root}/studies/${studyUid}/series/${seriesUid}/instances/${sopUid}/metadata`);
}

export function seriesThumbnailUrl(root: string, studyUid: string, seriesUid: string): string {
  return `${root}/studies/${studyUid}/series/${seriesUid}/thumbnail?viewport=96,96`;
}

/** One AI finding as `/viewer/<slug>/<study>/findings.json` lists it (saas.ai.selectors.study_findings). */
export interface Finding {
  id: number;
  label: string;
  confidence: number;
  diameter_mm: number;
  volume_ml: number;
  /** Patient coordinates (mm) of the finding's centre. */
  centre_mm: number[];
  critical: boolean;
  model: string;
  series_instance_uid: string;
  sop_instance_uid: string;
  segment_number: number;
  seg_sop_instance_uid: string;
}

export async function studyFindings(slug: string, studyUid: string): Promise<Finding[]> {
  const url = `/viewer/${encodeURIComponent(slug)}/${studyUid}/findings.json`;
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) throw new HttpError(response.status, url);
  return ((await response.json()) as { findings: Finding[] }).findings;
}

export function seriesInstances(root: string, studyUid: string, seriesUid: string): Promise<DicomJson[]> {
  return getJson(`${root}/studies/${studyUid}/series/${seriesUid}/instances`);
}

/** A whole instance (Part 10 bytes) by WADO-RS; the SEG overlay reads its segments and frames itself. */
export async function retrieveInstance(
  root: string,
  studyUid: string,
  seriesUid: string,
  sopUid: string,
): Promise<Uint8Array> {
  const url = `${root}/studies/${studyUid}/series/${seriesUid}/instances/${sopUid}`;
  const response = await fetch(url, {
    credentials: "same-origin",
    headers: { Accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' },
  });
  if (!response.ok) throw new HttpError(response.status, url);
  const [part] = multipartParts(response.headers.get("Content-Type") ?? "", new Uint8Array(await response.arrayBuffer()));
  if (!part) throw new Error(`no instance in the answer from ${url}`);
  return part;
}
