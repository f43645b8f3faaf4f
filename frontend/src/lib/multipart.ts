// The parts of a WADO-RS multipart/related answer (PS3.18 8.6.1.2): the viewer retrieves whole SEG instances
// this way; Cornerstone's loader handles frame answers itself.

/** The boundary parameter of a multipart Content-Type, quoted or not. */
export function multipartBoundary(contentType: string): string | undefined {
  const match = /(?:^|;)\s*boundary="?([^";]+)"?/i.exec(contentType);
  return match?.[1];
}

function indexOf(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  const last = haystack.length - needle.length;
  outer: for (let start = from; start <= last; start += 1) {
    for (let offset = 0; offset < needle.length; offset += 1) {
      if (haystack[start + offset] !== needle[offset]) continue outer;
    }
    return start;
  }
  return -1;
}

const HEADER_END = new Uint8Array([13, 10, 13, 10]);

/** The bodies of every part, in order (the part headers are dropped). */
export function multipartParts(contentType: string, body: Uint8Array): Uint8Array[] {
  const boundary = multipartBoundary(contentType);
  if (!boundary) throw new Error(`not a multipart answer: ${contentType}`);
  const first = new TextEncoder().encode(`--${boundary}`);
  // After the first, a delimiter starts on a new line: the CRLF before it belongs to it, not to the part
  // (RFC 2046 5.1.1), so "--boundary" inside binary content that does not start a line is content.
  const delimiter = new TextEncoder().encode(`\r\n--${boundary}`);
  const parts: Uint8Array[] = [];
  let position = indexOf(body, first, 0);
  let length = first.length;
  while (position >= 0) {
    const afterDelimiter = position + length;
    // "--boundary--" closes the body.
    if (body[afterDelimiter] === 45 && body[afterDelimiter + 1] === 45) break;
    const headersEnd = indexOf(body, HEADER_END, afterDelimiter);
    if (headersEnd < 0) break;
    const start = headersEnd + HEADER_END.length;
    const next = indexOf(body, delimiter, start);
    if (next < 0) break;
    parts.push(body.subarray(start, next));
    position = next;
    length = delimiter.length;
  }
  return parts;
}
