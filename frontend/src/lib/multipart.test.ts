import { describe, expect, it } from "vitest";
import { multipartBoundary, multipartParts } from "./multipart";

const encode = (text: string) => new TextEncoder().encode(text);

describe("multipart", () => {
  it("reads the boundary, quoted or not", () => {
    expect(multipartBoundary('multipart/related; type="application/dicom"; boundary="abc 1"')).toBe("abc 1");
    expect(multipartBoundary("multipart/related;boundary=xyz;type=application/dicom")).toBe("xyz");
    expect(multipartBoundary("application/dicom")).toBeUndefined();
  });
  it("returns each part's body without headers or the CRLF before the next delimiter", () => {
    const body = encode(
      "--b1\r\nContent-Type: application/dicom\r\n\r\nDICM--b1\r\n\r\n\r\n--b1\r\nContent-Type: application/dicom\r\n\r\nsecond\r\n--b1--\r\n",
    );
    const parts = multipartParts("multipart/related; boundary=b1", body).map((part) => new TextDecoder().decode(part));
    expect(parts).toEqual(["DICM--b1\r\n\r\n", "second"]);
  });
  it("refuses an answer that is not multipart", () => {
    expect(() => multipartParts("application/json", encode("{}"))).toThrow(/not a multipart/);
  });
});
