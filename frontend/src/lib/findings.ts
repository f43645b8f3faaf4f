// How a finding reads in the list: what, how sure, how big.
import type { Finding } from "./api";

export function formatFinding(finding: Finding): { title: string; detail: string } {
  const label = finding.label.replace(/_/g, " ");
  const title = `${finding.critical ? "Critical: " : ""}${label.charAt(0).toUpperCase()}${label.slice(1)}`;
  const parts = [`${Math.round(finding.confidence * 100)}% confidence`];
  if (finding.diameter_mm > 0) parts.push(`${finding.diameter_mm.toFixed(1)} mm`);
  if (finding.volume_ml > 0) parts.push(`${finding.volume_ml.toFixed(1)} ml`);
  return { title, detail: parts.join(" · ") };
}
