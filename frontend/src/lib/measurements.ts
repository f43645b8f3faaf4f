// What a measurement says in the list, from the statistics Cornerstone's tools cache on each annotation.

/** The part of a Cornerstone annotation the summary reads (kept structural so it is testable without a DOM). */
export interface MeasuredAnnotation {
  metadata?: { toolName?: string };
  data?: { cachedStats?: object };
}

export interface MeasurementSummary {
  kind: "length" | "angle" | "ellipse" | "other";
  text: string;
}

export function measurementsStorageKey(slug: string, studyUid: string): string {
  return `readroom:measurements:${slug}:${studyUid}`;
}

function numeric(value: unknown): number | undefined {
  return typeof value === "number" && Number.isFinite(value) ? value : undefined;
}

function unit(value: unknown, fallback: string): string {
  return typeof value === "string" && value ? value : fallback;
}

export function summariseMeasurement(annotation: MeasuredAnnotation): MeasurementSummary {
  // Stats are cached per target (image); a stack annotation lies on one image, so the first entry is it.
  const stats = (Object.values(annotation.data?.cachedStats ?? {}).find((entry) => entry && typeof entry === "object") ??
    {}) as Record<string, unknown>;
  const toolName = annotation.metadata?.toolName;
  switch (toolName) {
    case "Length": {
      const length = numeric(stats.length);
      return { kind: "length", text: length === undefined ? "Length" : `Length ${length.toFixed(1)} ${unit(stats.unit, "mm")}` };
    }
    case "Angle": {
      const angle = numeric(stats.angle);
      return { kind: "angle", text: angle === undefined ? "Angle" : `Angle ${angle.toFixed(1)}°` };
    }
    case "EllipticalROI": {
      const mean = numeric(stats.mean);
      const stdDev = numeric(stats.stdDev);
      const area = numeric(stats.area);
      if (mean === undefined) return { kind: "ellipse", text: "Ellipse" };
      const modalityUnit = unit(stats.modalityUnit, "");
      const parts = [`Ellipse mean ${mean.toFixed(1)} ${modalityUnit}`.trim()];
      if (stdDev !== undefined) parts.push(`SD ${stdDev.toFixed(1)} ${modalityUnit}`.trim());
      if (area !== undefined) parts.push(`area ${area.toFixed(1)} ${unit(stats.areaUnit, "mm²")}`);
      return { kind: "ellipse", text: parts.join(", ") };
    }
    default:
      return { kind: "other", text: toolName ?? "Measurement" };
  }
}
