// Reading a DICOM Segmentation (PS3.3 A.51, C.8.20) into per-slice masks the overlay turns into labelmaps.
//
// Only what the overlay needs: the segments (number, label, recommended colour), and for each frame its
// segment, the source slice it was derived from (or its position, when the SEG names no source) and its
// pixels. BINARY (1 bit, packed across frames) and FRACTIONAL (8 bit) SEGs, native or encapsulated: the
// compressed transfer syntaxes a SEG may use (RLE, JPEG-LS and JPEG 2000 lossless; PS3.5 A.4) are decoded
// frame by frame by the `FrameDecoder` the caller passes (the viewer's is Cornerstone's, in its web workers).
import * as dicomParser from "dicom-parser";

export interface SegSegment {
  number: number;
  label: string;
  /** sRGB 0-255 from RecommendedDisplayCIELabValue, when the SEG gives one. */
  color?: [number, number, number];
}

export interface SegFrame {
  segmentNumber: number;
  referencedSopInstanceUid?: string;
  /** The frame of a multi-frame source instance the frame was derived from (ReferencedFrameNumber). */
  referencedFrameNumber?: number;
  /** ImagePositionPatient of the frame (PlanePositionSequence), in mm. */
  position?: [number, number, number];
  /** One byte per pixel, 1 inside the segment. */
  mask: Uint8Array;
}

/**
 * Decodes one encapsulated frame to one sample per pixel (row by row). `bitsAllocated` is the SEG's own: 1 for
 * BINARY, 8 for FRACTIONAL.
 */
export type FrameDecoder = (
  encoded: Uint8Array,
  transferSyntaxUid: string,
  frame: { rows: number; columns: number; bitsAllocated: number },
) => Promise<ArrayLike<number>>;

export interface Seg {
  sopInstanceUid: string;
  seriesInstanceUid: string;
  referencedSeriesInstanceUids: string[];
  rows: number;
  columns: number;
  segments: SegSegment[];
  frames: SegFrame[];
}

/** The most the masks of one SEG may take (one byte per pixel and frame): 1 GiB. */
export const MAX_MASK_BYTES = 1024 ** 3;

const TAG = {
  SOPInstanceUID: "x00080018",
  SeriesInstanceUID: "x0020000e",
  ReferencedSeriesSequence: "x00081115",
  Rows: "x00280010",
  Columns: "x00280011",
  NumberOfFrames: "x00280008",
  BitsAllocated: "x00280100",
  SegmentationType: "x00620001",
  SegmentSequence: "x00620002",
  SegmentNumber: "x00620004",
  SegmentLabel: "x00620005",
  RecommendedDisplayCIELabValue: "x0062000d",
  MaximumFractionalValue: "x0062000e",
  SegmentIdentificationSequence: "x0062000a",
  ReferencedSegmentNumber: "x0062000b",
  SharedFunctionalGroupsSequence: "x52009229",
  PerFrameFunctionalGroupsSequence: "x52009230",
  DerivationImageSequence: "x00089124",
  SourceImageSequence: "x00082112",
  ReferencedSOPInstanceUID: "x00081155",
  ReferencedFrameNumber: "x00081160",
  PlanePositionSequence: "x00209113",
  ImagePositionPatient: "x00200032",
  PixelData: "x7fe00010",
  TransferSyntaxUID: "x00020010",
} as const;

/**
 * Unpacks frame `frame` of 1-bit pixel data: frames follow each other bit by bit (PS3.5 8.1.1, no padding
 * between frames), the first pixel in the least significant bit of the first byte.
 */
export function unpackBitFrame(packed: Uint8Array, frame: number, pixels: number): Uint8Array {
  const mask = new Uint8Array(pixels);
  const firstBit = frame * pixels;
  for (let pixel = 0; pixel < pixels; pixel += 1) {
    const bit = firstBit + pixel;
    mask[pixel] = (packed[bit >> 3] >> (bit & 7)) & 1;
  }
  return mask;
}

/** DICOM's scaled CIELab (PS3.3 C.10.7.1.1: L 0-100, a/b -128..127 over 0-65535) to sRGB 0-255 (D65). */
export function cielabToRgb(scaled: [number, number, number]): [number, number, number] {
  const l = (scaled[0] * 100) / 65535;
  const a = (scaled[1] * 255) / 65535 - 128;
  const b = (scaled[2] * 255) / 65535 - 128;
  const fy = (l + 16) / 116;
  const fx = fy + a / 500;
  const fz = fy - b / 200;
  const inverse = (t: number) => (t > 6 / 29 ? t ** 3 : 3 * (6 / 29) ** 2 * (t - 4 / 29));
  const [x, y, z] = [0.95047 * inverse(fx), inverse(fy), 1.08883 * inverse(fz)];
  const linear = [
    3.2404542 * x - 1.5371385 * y - 0.4985314 * z,
    -0.969266 * x + 1.8760108 * y + 0.041556 * z,
    0.0556434 * x - 0.2040259 * y + 1.0572252 * z,
  ];
  return linear.map((channel) => {
    const clipped = Math.min(1, Math.max(0, channel));
    const gamma = clipped <= 0.0031308 ? 12.92 * clipped : 1.055 * clipped ** (1 / 2.4) - 0.055;
    return Math.round(gamma * 255);
  }) as [number, number, number];
}

function firstItem(dataSet: dicomParser.DataSet | undefined, tag: string): dicomParser.DataSet | undefined {
  return dataSet?.elements[tag]?.items?.[0]?.dataSet;
}

function uids(dataSet: dicomParser.DataSet, tag: string): string {
  return (dataSet.string(tag) ?? "").replace(/\0/g, "").trim();
}

function position(dataSet: dicomParser.DataSet | undefined): [number, number, number] | undefined {
  const plane = firstItem(dataSet, TAG.PlanePositionSequence);
  if (!plane?.elements[TAG.ImagePositionPatient]) return undefined;
  const values = [0, 1, 2].map((index) => plane.floatString(TAG.ImagePositionPatient, index));
  return values.every((value) => value !== undefined && Number.isFinite(value))
    ? (values as [number, number, number])
    : undefined;
}

/**
 * The bytes of one frame of encapsulated pixel data: located by the Basic Offset Table when there is one, else
 * one fragment per frame (what highdicom and most writers do), else a single frame spread over its fragments.
 */
export function encapsulatedFrame(
  dataSet: dicomParser.DataSet,
  pixelData: dicomParser.Element,
  frame: number,
  frameCount: number,
): Uint8Array {
  const fragments = pixelData.fragments ?? [];
  if (pixelData.basicOffsetTable?.length) {
    return dicomParser.readEncapsulatedImageFrame(dataSet, pixelData, frame) as Uint8Array;
  }
  if (fragments.length === frameCount) {
    return dicomParser.readEncapsulatedPixelDataFromFragments(dataSet, pixelData, frame, 1) as Uint8Array;
  }
  if (frameCount === 1 && fragments.length > 0) {
    return dicomParser.readEncapsulatedPixelDataFromFragments(dataSet, pixelData, 0, fragments.length) as Uint8Array;
  }
  throw new Error(
    `the SEG's ${frameCount} compressed frames cannot be told apart: no offset table, and ${fragments.length} fragments`,
  );
}

/** One byte per pixel, 1 where a sample reaches `threshold` (and is not 0). */
export function maskOf(samples: ArrayLike<number>, pixels: number, threshold: number): Uint8Array {
  if (samples.length < pixels) throw new Error(`a SEG frame holds ${samples.length} pixels, not ${pixels}`);
  const mask = new Uint8Array(pixels);
  for (let pixel = 0; pixel < pixels; pixel += 1) {
    const value = samples[pixel];
    mask[pixel] = value >= threshold && value > 0 ? 1 : 0;
  }
  return mask;
}

/** Parses a Part 10 SEG instance; `decode` is needed only when its pixel data is encapsulated. */
export async function parseSeg(part10: Uint8Array, decode?: FrameDecoder): Promise<Seg> {
  const dataSet = dicomParser.parseDicom(part10);
  const rows = dataSet.uint16(TAG.Rows) ?? 0;
  const columns = dataSet.uint16(TAG.Columns) ?? 0;
  const frameCount = Number(dataSet.intString(TAG.NumberOfFrames) ?? 1);
  const bitsAllocated = dataSet.uint16(TAG.BitsAllocated) ?? 1;
  const fractional = uids(dataSet, TAG.SegmentationType).toUpperCase() === "FRACTIONAL";
  const maximumFraction = dataSet.uint16(TAG.MaximumFractionalValue) ?? 255;
  const pixelData = dataSet.elements[TAG.PixelData];
  if (!pixelData || !rows || !columns) throw new Error("the SEG has no pixel data");
  if (rows * columns * frameCount > MAX_MASK_BYTES) {
    // A compressed SEG's size is not bounded by its bytes: refuse what would not fit the tab's memory.
    throw new Error(`the SEG is too large to show: ${frameCount} frames of ${columns} x ${rows} pixels`);
  }
  const transferSyntaxUid = uids(dataSet, TAG.TransferSyntaxUID);
  if (pixelData.encapsulatedPixelData && !decode) {
    throw new Error(`the SEG is compressed (${transferSyntaxUid}) and no decoder was given`);
  }

  const segments: SegSegment[] = (dataSet.elements[TAG.SegmentSequence]?.items ?? []).flatMap((item) => {
    const segment = item.dataSet;
    if (!segment) return [];
    const lab = [0, 1, 2].map((index) => segment.uint16(TAG.RecommendedDisplayCIELabValue, index));
    return [
      {
        number: segment.uint16(TAG.SegmentNumber) ?? 0,
        label: uids(segment, TAG.SegmentLabel),
        color: lab.every((value) => value !== undefined) ? cielabToRgb(lab as [number, number, number]) : undefined,
      },
    ];
  });

  const referencedSeriesInstanceUids = (dataSet.elements[TAG.ReferencedSeriesSequence]?.items ?? [])
    .map((item) => (item.dataSet ? uids(item.dataSet, TAG.SeriesInstanceUID) : ""))
    .filter(Boolean);

  const shared = firstItem(dataSet, TAG.SharedFunctionalGroupsSequence);
  const perFrame = dataSet.elements[TAG.PerFrameFunctionalGroupsSequence]?.items ?? [];
  const pixels = rows * columns;
  const bytes = part10.subarray(pixelData.dataOffset, pixelData.dataOffset + pixelData.length);
  // Fractional: a pixel belongs to the segment from half the maximum up (how readers outline it).
  const threshold = fractional ? maximumFraction / 2 : 1;
  // Encapsulated frames are decoded side by side (the decoder's web workers share them out).
  async function readFrame(frame: number): Promise<SegFrame> {
    const groups = perFrame[frame]?.dataSet;
    // A functional group sits either in the frame's item or, the same for all frames, in the shared one.
    const group = (tag: string) => firstItem(groups, tag) ?? firstItem(shared, tag);
    const source = firstItem(group(TAG.DerivationImageSequence), TAG.SourceImageSequence);
    let mask: Uint8Array;
    if (pixelData.encapsulatedPixelData && decode) {
      const encoded = encapsulatedFrame(dataSet, pixelData, frame, frameCount);
      mask = maskOf(await decode(encoded, transferSyntaxUid, { rows, columns, bitsAllocated }), pixels, threshold);
    } else if (bitsAllocated === 1) {
      mask = unpackBitFrame(bytes, frame, pixels);
    } else {
      mask = maskOf(bytes.subarray(frame * pixels, (frame + 1) * pixels), pixels, threshold);
    }
    return {
      segmentNumber: group(TAG.SegmentIdentificationSequence)?.uint16(TAG.ReferencedSegmentNumber) ?? 1,
      referencedSopInstanceUid: source ? uids(source, TAG.ReferencedSOPInstanceUID) || undefined : undefined,
      referencedFrameNumber: source?.elements[TAG.ReferencedFrameNumber]
        ? source.intString(TAG.ReferencedFrameNumber)
        : undefined,
      position: position(groups) ?? position(shared),
      mask,
    };
  }
  const frames = await Promise.all(Array.from({ length: frameCount }, (_, frame) => readFrame(frame)));
  return {
    sopInstanceUid: uids(dataSet, TAG.SOPInstanceUID),
    seriesInstanceUid: uids(dataSet, TAG.SeriesInstanceUID),
    referencedSeriesInstanceUids,
    rows,
    columns,
    segments,
    frames,
  };
}

export interface SliceRef {
  sopInstanceUid: string;
  /** The frame of the instance this slice is (1-based; absent for a single-frame image). */
  frame?: number;
  position?: [number, number, number];
}

/**
 * The index of the slice a SEG frame lies on: the source instance it names (and, in a multi-frame source, the
 * frame it names), else the slice whose position is within `toleranceMm` of the frame's; undefined when
 * neither matches (the frame is then not shown).
 */
export function sliceIndexForFrame(frame: SegFrame, slices: SliceRef[], toleranceMm = 0.01): number | undefined {
  if (frame.referencedSopInstanceUid) {
    const candidates = slices.flatMap((slice, index) => (slice.sopInstanceUid === frame.referencedSopInstanceUid ? [index] : []));
    const named = frame.referencedFrameNumber;
    const index =
      named !== undefined
        ? candidates.find((candidate) => (slices[candidate].frame ?? 1) === named)
        : candidates.length === 1
          ? candidates[0]
          : undefined;
    if (index !== undefined) return index;
  }
  const target = frame.position;
  if (!target) return undefined;
  const index = slices.findIndex(
    (slice) => slice.position !== undefined && slice.position.every((value, axis) => Math.abs(value - target[axis]) <= toleranceMm),
  );
  return index >= 0 ? index : undefined;
}

/** A distinct colour for segment n when the SEG recommends none. */
export const DEFAULT_SEGMENT_COLORS: readonly [number, number, number][] = [
  [255, 64, 64],
  [64, 200, 255],
  [255, 200, 0],
  [120, 255, 80],
  [220, 90, 255],
  [255, 140, 40],
];

export function segmentColor(segment: SegSegment): [number, number, number] {
  return segment.color ?? DEFAULT_SEGMENT_COLORS[(Math.max(1, segment.number) - 1) % DEFAULT_SEGMENT_COLORS.length];
}

export function rgbToHex([r, g, b]: [number, number, number]): string {
  return `#${[r, g, b].map((channel) => channel.toString(16).padStart(2, "0")).join("")}`;
}

export function hexToRgb(hex: string): [number, number, number] {
  const value = Number.parseInt(hex.replace("#", ""), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}
