// The study's first requests, started while the rest of the viewer is still being evaluated. main.ts imports
// this module before anything else, so its top level runs before Cornerstone's megabytes of modules (half a
// second and more on a busy machine) and the series list and the first series' metadata are already on the way.
//
// The first series' metadata takes the image store a second or more to build (it reads every instance), so the
// slice the stack opens on is found without waiting for it: the index lists the study's instances (QIDO-RS,
// asked for at once with the series list), and the metadata of the first series' lowest and highest
// InstanceNumber says which end `sortInstances` puts first. main.ts draws that slice at once and counts it as
// the first image only if the full metadata's order agrees.
//
// Responses are handled only once the module evaluation ends (one task), so everything the chain needs is asked
// for here, at the top: after the evaluation, the series' metadata and two instances' metadata go out together.
import { instanceMetadata, seriesMetadata, studyInstanceList, studySeries } from "../lib/api";
import { type DicomJson, Tag, text } from "../lib/dicomJson";
import { type SeriesImage, edgeInstances, seriesImages, sortInstances, wadoRoot } from "../lib/imageIds";
import { firstImageSeries } from "../lib/seriesOrder";

export interface StudyPrefetch {
  /** The study's series (QIDO-RS), as main.ts asks for them. */
  series: Promise<DicomJson[]>;
  /** The prefetched series-level metadata of this series, handed out once (a retry fetches afresh). */
  takeMetadata(seriesUid: string): Promise<DicomJson[]> | undefined;
  /** The slice this series most likely opens on, when it is the prefetched series; undefined when unknown. */
  likelyFirstImage(seriesUid: string): Promise<SeriesImage | undefined>;
}

function quietly<T>(promise: Promise<T>): Promise<T> {
  // Whoever uses a prefetched answer handles its failure; one nobody asks for must not surface as unhandled.
  promise.catch(() => undefined);
  return promise;
}

async function likelyFirst(
  root: string,
  studyUid: string,
  seriesUid: string,
  instances: Promise<DicomJson[]>,
): Promise<SeriesImage | undefined> {
  const rows = (await instances).filter((row) => text(row, Tag.SeriesInstanceUID) === seriesUid);
  const edges = edgeInstances(rows);
  const metadata = await Promise.all(
    edges.map((row) => instanceMetadata(root, studyUid, seriesUid, text(row, Tag.SOPInstanceUID))),
  );
  const [first] = sortInstances(metadata.flat());
  return first ? seriesImages(root, [first])[0] : undefined;
}

function startPrefetch(): StudyPrefetch | undefined {
  const viewer = document.querySelector<HTMLElement>("[data-viewer]");
  const slug = viewer?.dataset.slug;
  const studyUid = viewer?.dataset.studyUid;
  if (!slug || !studyUid) return undefined;
  const root = wadoRoot(slug);
  const series = quietly(studySeries(root, studyUid));
  const instances = quietly(studyInstanceList(root, studyUid));
  const firstUid = quietly(series.then((list) => text(firstImageSeries(list) ?? {}, Tag.SeriesInstanceUID)));
  let metadata: Promise<DicomJson[]> | undefined = quietly(
    firstUid.then((uid) => (uid ? seriesMetadata(root, studyUid, uid) : [])),
  );
  // Requested alongside the series' metadata, never after it: on its own it is three small requests.
  const first = firstUid
    .then((uid) => (uid ? likelyFirst(root, studyUid, uid, instances) : undefined))
    .catch(() => undefined);
  return {
    series,
    takeMetadata(seriesUid) {
      // Only the first series is prefetched; which one that is is known only once the series list is in.
      if (!metadata) return undefined;
      const taken = metadata;
      metadata = undefined;
      return firstUid.then((uid) => (uid === seriesUid ? taken : seriesMetadata(root, studyUid, seriesUid)));
    },
    likelyFirstImage(seriesUid) {
      return firstUid.then((uid) => (uid === seriesUid ? first : undefined)).catch(() => undefined);
    },
  };
}

export const studyPrefetch = startPrefetch();
