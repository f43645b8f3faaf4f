// The few DICOMweb calls the viewer makes itself (Cornerstone's loader fetches the frames).
// The server decides what this user may see; a 404 here means "not found or not yours".
import type { DicomJson } from "./dicomJson";

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

export function seriesThumbnailUrl(root: string, studyUid: string, seriesUid: string): string {
  return `${root}/studies/${studyUid}/series/${seriesUid}/thumbnail?viewport=96,96`;
}
