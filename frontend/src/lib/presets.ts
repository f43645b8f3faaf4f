// Window/level presets for CT (HU) and the conversions between width/centre and Cornerstone's VOI range.

export interface WindowLevel {
  width: number;
  center: number;
}

export interface Preset extends WindowLevel {
  id: string;
  label: string;
  key: string;
}

export const CT_PRESETS: readonly Preset[] = [
  { id: "brain", label: "Brain", key: "1", width: 80, center: 40 },
  { id: "subdural", label: "Subdural", key: "2", width: 200, center: 75 },
  { id: "lung", label: "Lung", key: "3", width: 1500, center: -600 },
  { id: "bone", label: "Bone", key: "4", width: 2000, center: 400 },
  { id: "abdomen", label: "Abdomen", key: "5", width: 400, center: 40 },
];

export interface VoiRange {
  lower: number;
  upper: number;
}

// DICOM's LINEAR function (PS3.3 C.11.2.1.2.1), as Cornerstone converts it: a width W spans W - 1 between
// the last black and the first white value, centred half a unit below the window centre.
export function toVoiRange({ width, center }: WindowLevel): VoiRange {
  return { lower: center - 0.5 - (width - 1) / 2, upper: center - 0.5 + (width - 1) / 2 };
}

export function fromVoiRange({ lower, upper }: VoiRange): WindowLevel {
  return { width: Math.abs(upper - lower) + 1, center: (lower + upper + 1) / 2 };
}

/** Linear VOI (PS3.3 C.11.2.1.2, as the viewer renders it): the display grey (0-255) of a modality value. */
export function displayGrey(value: number, { width, center }: WindowLevel): number {
  const fraction = (value - (center - width / 2)) / width;
  return Math.round(255 * Math.min(1, Math.max(0, fraction)));
}

export function formatWindowLevel({ width, center }: WindowLevel): string {
  return `W ${Math.round(width)} / L ${Math.round(center)}`;
}
