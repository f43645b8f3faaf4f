// The segmentation overlay: every DICOM SEG of the study (an AI result or a reader's), shown as a labelmap
// over the series it references, with a toggle, an opacity and a colour per segment. The SEGs are fetched
// over DICOMweb like any instance; which of them the user may see was decided by the server. Compressed SEGs
// are decoded by Cornerstone's DICOM image loader, in the web workers and with the codecs that decode the images.
import { type Types, getWebWorkerManager, imageLoader } from "@cornerstonejs/core";
import { Enums as toolsEnums, segmentation } from "@cornerstonejs/tools";
import { retrieveInstance, seriesInstances } from "../lib/api";
import { type DicomJson, Tag, framePosition, text } from "../lib/dicomJson";
import type { SeriesImage } from "../lib/imageIds";
import {
  type FrameDecoder,
  type Seg,
  type SliceRef,
  hexToRgb,
  parseSeg,
  rgbToHex,
  segmentColor,
  sliceIndexForFrame,
} from "../lib/seg";
import type { StackHandle } from "./stackViewport";

const LABELMAP = toolsEnums.SegmentationRepresentations.Labelmap;
const DEFAULT_OPACITY = 0.5;

interface LoadedSeg {
  seg: Seg;
  description: string;
  visible: boolean;
  opacity: number;
  colors: Map<number, [number, number, number]>;
}

interface Shown {
  loaded: LoadedSeg;
  segmentationId: string;
  viewportId: string;
}

export interface SegOverlayOptions {
  root: string;
  studyUid: string;
  segSeries: DicomJson[];
  /** Set with Cornerstone's CPU renderer, which has no labelmap layer: why the overlays are not loaded. */
  unavailable?: string;
  onError(error: unknown): void;
}

/** One SEG frame through the image loader's `decodeTask` (registered by its init, cornerstone/init.ts). */
const decodeSegFrame: FrameDecoder = async (encoded, transferSyntaxUid, { rows, columns, bitsAllocated }) => {
  const decoded = await getWebWorkerManager().executeTask("dicomImageLoader", "decodeTask", {
    imageFrame: {
      rows,
      columns,
      bitsAllocated,
      bitsStored: bitsAllocated,
      samplesPerPixel: 1,
      pixelRepresentation: 0,
      planarConfiguration: 0,
      photometricInterpretation: "MONOCHROME2",
    },
    transferSyntax: transferSyntaxUid,
    pixelData: encoded,
    // Samples as stored: no modality LUT, no type conversion to a target buffer.
    options: { preScale: { enabled: false } },
    decodeConfig: {},
  });
  return (decoded as { pixelData: ArrayLike<number> }).pixelData;
};

function sliceRefs(images: SeriesImage[]): SliceRef[] {
  return images.map((image) => ({
    sopInstanceUid: text(image.metadata, Tag.SOPInstanceUID),
    frame: image.frame,
    position: framePosition(image.metadata, image.frame),
  }));
}

export function setupSegOverlay(container: HTMLElement, options: SegOverlayOptions) {
  const section = document.createElement("section");
  section.className = "seg-overlay";
  section.setAttribute("aria-label", "Segmentation overlays");
  const heading = document.createElement("h2");
  heading.textContent = "Overlays";
  const list = document.createElement("div");
  section.append(heading, list);
  section.hidden = options.segSeries.length === 0;
  container.append(section);

  const loadedSegs: LoadedSeg[] = [];
  // Segmentations (labelmap images) are built once per SEG and referenced series; representations per viewport.
  const built = new Map<string, string>();
  const shown: Shown[] = [];

  function note(message: string): void {
    const paragraph = document.createElement("p");
    paragraph.className = "seg-error";
    paragraph.textContent = message;
    list.append(paragraph);
  }

  // 1. Fetch and read every SEG instance of the study's SEG series (never rejects: the images come first).
  const ready = (async () => {
    if (options.segSeries.length > 0 && options.unavailable) {
      note(`The segmentation overlays are not drawn: ${options.unavailable}.`);
      return;
    }
    for (const series of options.segSeries) {
      const seriesUid = text(series, Tag.SeriesInstanceUID);
      for (const instance of await seriesInstances(options.root, options.studyUid, seriesUid)) {
        const sopUid = text(instance, Tag.SOPInstanceUID);
        try {
          const part10 = await retrieveInstance(options.root, options.studyUid, seriesUid, sopUid);
          const seg = await parseSeg(part10, decodeSegFrame);
          const loaded: LoadedSeg = {
            seg,
            description: text(series, Tag.SeriesDescription) || "Segmentation",
            visible: true,
            opacity: DEFAULT_OPACITY,
            colors: new Map(seg.segments.map((segment) => [segment.number, segmentColor(segment)])),
          };
          loadedSegs.push(loaded);
          list.append(controls(loaded));
        } catch (error) {
          // One unreadable SEG must not take the others (or the images) down with it.
          note(`A segmentation could not be shown: ${error instanceof Error ? error.message : error}`);
          options.onError(error);
        }
      }
    }
  })().catch((error: unknown) => {
    note("The segmentations of this study could not be loaded.");
    options.onError(error);
  });

  function controls(loaded: LoadedSeg): HTMLElement {
    const block = document.createElement("fieldset");
    block.dataset.seg = loaded.seg.sopInstanceUid;
    const legend = document.createElement("legend");
    legend.textContent = loaded.description;
    const toggleLabel = document.createElement("label");
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.checked = loaded.visible;
    toggle.dataset.segToggle = loaded.seg.sopInstanceUid;
    toggle.addEventListener("change", () => setVisible(loaded, toggle.checked));
    toggleLabel.append(toggle, " Show (S)");
    const opacityLabel = document.createElement("label");
    const opacity = document.createElement("input");
    opacity.type = "range";
    opacity.min = "0";
    opacity.max = "1";
    opacity.step = "0.05";
    opacity.value = String(loaded.opacity);
    opacity.dataset.segOpacity = loaded.seg.sopInstanceUid;
    opacity.addEventListener("input", () => {
      loaded.opacity = Number(opacity.value);
      for (const entry of shownFor(loaded)) applyStyle(entry);
    });
    opacityLabel.append("Opacity ", opacity);
    const segments = document.createElement("ul");
    for (const segment of loaded.seg.segments) {
      const item = document.createElement("li");
      const color = document.createElement("input");
      color.type = "color";
      color.value = rgbToHex(loaded.colors.get(segment.number) ?? segmentColor(segment));
      color.dataset.segmentColor = String(segment.number);
      color.setAttribute("aria-label", `Colour of ${segment.label || `segment ${segment.number}`}`);
      color.addEventListener("input", () => {
        loaded.colors.set(segment.number, hexToRgb(color.value));
        for (const entry of shownFor(loaded)) applyColors(entry);
      });
      item.append(color, ` ${segment.number}: ${segment.label || "segment"}`);
      segments.append(item);
    }
    block.append(legend, toggleLabel, opacityLabel, segments);
    return block;
  }

  function shownFor(loaded: LoadedSeg): Shown[] {
    return shown.filter((entry) => entry.loaded === loaded);
  }

  function applyColors(entry: Shown): void {
    for (const [number, [r, g, b]] of entry.loaded.colors) {
      segmentation.config.color.setSegmentIndexColor(entry.viewportId, entry.segmentationId, number, [r, g, b, 255] as Types.Color);
    }
  }

  function applyStyle(entry: Shown): void {
    const opacity = entry.loaded.opacity;
    segmentation.config.style.setStyle(
      { type: LABELMAP, viewportId: entry.viewportId, segmentationId: entry.segmentationId },
      { fillAlpha: opacity, fillAlphaInactive: opacity, outlineOpacity: Math.min(1, opacity * 2), outlineOpacityInactive: Math.min(1, opacity * 2) },
    );
  }

  function setVisible(loaded: LoadedSeg, visible: boolean): void {
    loaded.visible = visible;
    const toggle = section.querySelector<HTMLInputElement>(`[data-seg-toggle="${loaded.seg.sopInstanceUid}"]`);
    if (toggle) toggle.checked = visible;
    for (const entry of shownFor(loaded)) {
      segmentation.config.visibility.setSegmentationRepresentationVisibility(
        entry.viewportId,
        { segmentationId: entry.segmentationId, type: LABELMAP },
        visible,
      );
    }
  }

  /** Builds the labelmap images of one SEG over one series' imageIds (once). */
  function buildSegmentation(loaded: LoadedSeg, seriesUid: string, images: SeriesImage[]): string | undefined {
    const segmentationId = `seg:${loaded.seg.sopInstanceUid}:${seriesUid}`;
    if (built.has(segmentationId)) return segmentationId;
    const slices = sliceRefs(images);
    const placed = loaded.seg.frames.map((frame) => sliceIndexForFrame(frame, slices));
    if (placed.every((index) => index === undefined)) return undefined;
    // 2. One derived (8-bit, same geometry) labelmap image per slice of the referenced series.
    const labelmaps = imageLoader.createAndCacheDerivedLabelmapImages(images.map((image) => image.imageId));
    loaded.seg.frames.forEach((frame, frameIndex) => {
      const index = placed[frameIndex];
      if (index === undefined) return;
      const labelmap = labelmaps[index];
      const voxels = labelmap.voxelManager;
      if (!voxels || labelmap.rows * labelmap.columns !== frame.mask.length) return;
      for (let pixel = 0; pixel < frame.mask.length; pixel += 1) {
        if (frame.mask[pixel]) voxels.setAtIndex(pixel, frame.segmentNumber);
      }
    });
    // 3. The segmentation, stack-based: its labelmap imageIds follow the viewport's images one to one.
    segmentation.addSegmentations([
      {
        segmentationId,
        representation: { type: LABELMAP, data: { imageIds: labelmaps.map((image) => image.imageId) } },
        config: {
          label: loaded.description,
          segments: Object.fromEntries(
            loaded.seg.segments.map((segment) => [segment.number, { segmentIndex: segment.number, label: segment.label }]),
          ),
        },
      },
    ]);
    built.set(segmentationId, seriesUid);
    return segmentationId;
  }

  /** Shows every SEG that references `seriesUid` over the viewport that now shows that series. */
  async function attach(stack: StackHandle, seriesUid: string, images: SeriesImage[]): Promise<void> {
    await ready;
    detach(stack.viewportId);
    for (const loaded of loadedSegs) {
      const references = loaded.seg.referencedSeriesInstanceUids;
      if (references.length > 0 && !references.includes(seriesUid)) continue;
      const segmentationId = buildSegmentation(loaded, seriesUid, images);
      if (!segmentationId) continue;
      // 4. The labelmap representation on this viewport, then its colours, opacity and visibility.
      await segmentation.addLabelmapRepresentationToViewport(stack.viewportId, [{ segmentationId }]);
      const entry: Shown = { loaded, segmentationId, viewportId: stack.viewportId };
      shown.push(entry);
      applyColors(entry);
      applyStyle(entry);
      if (!loaded.visible) setVisible(loaded, false);
    }
    stack.viewport.render();
  }

  function detach(viewportId: string): void {
    for (let index = shown.length - 1; index >= 0; index -= 1) {
      if (shown[index].viewportId !== viewportId) continue;
      segmentation.removeSegmentationRepresentations(viewportId, { segmentationId: shown[index].segmentationId });
      shown.splice(index, 1);
    }
  }

  return {
    ready,
    attach,
    detach,
    /** Every SEG on or off at once (key S). */
    toggleAll() {
      const anyVisible = loadedSegs.some((loaded) => loaded.visible);
      for (const loaded of loadedSegs) setVisible(loaded, !anyVisible);
    },
    teardown() {
      for (const entry of [...shown]) detach(entry.viewportId);
      for (const segmentationId of built.keys()) segmentation.removeSegmentation(segmentationId);
      section.remove();
    },
  };
}

export type SegOverlayHandle = ReturnType<typeof setupSegOverlay>;
