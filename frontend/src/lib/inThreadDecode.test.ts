import { describe, expect, it } from "vitest";
import { IN_THREAD_MAX_BYTES, type WorkerManager, decodeUncompressedInThread, decodesInThread } from "./inThreadDecode";

const EXPLICIT_LE = "1.2.840.10008.1.2.1";
const IMPLICIT_LE = "1.2.840.10008.1.2";
const frame = (bytes: number) => ({ byteLength: bytes });

describe("decodesInThread", () => {
  it("takes the loader's uncompressed little-endian frames", () => {
    expect(decodesInThread("dicomImageLoader", "decodeTask", { transferSyntax: EXPLICIT_LE, pixelData: frame(524288) }))
      .toBe(true);
    expect(decodesInThread("dicomImageLoader", "decodeTask", { transferSyntax: IMPLICIT_LE, pixelData: frame(8) }))
      .toBe(true);
    expect(
      decodesInThread("dicomImageLoader", "decodeTask", {
        transferSyntax: EXPLICIT_LE,
        pixelData: frame(IN_THREAD_MAX_BYTES),
      }),
    ).toBe(true);
  });

  it("leaves compressed and big-endian frames, and larger ones, to the workers", () => {
    // JPEG baseline, JPEG-LS, RLE, explicit VR big endian
    const others = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.2"];
    for (const syntax of others) {
      const task = { transferSyntax: syntax, pixelData: frame(8) };
      expect(decodesInThread("dicomImageLoader", "decodeTask", task)).toBe(false);
    }
    const large = { transferSyntax: EXPLICIT_LE, pixelData: frame(IN_THREAD_MAX_BYTES + 1) };
    expect(decodesInThread("dicomImageLoader", "decodeTask", large)).toBe(false);
  });

  it("leaves other workers' tasks, and tasks without a frame or a syntax, alone", () => {
    const task = { transferSyntax: EXPLICIT_LE, pixelData: frame(8) };
    expect(decodesInThread("compute", "decodeTask", task)).toBe(false);
    expect(decodesInThread("dicomImageLoader", "otherTask", task)).toBe(false);
    expect(decodesInThread("dicomImageLoader", "decodeTask", { transferSyntax: EXPLICIT_LE })).toBe(false);
    expect(decodesInThread("dicomImageLoader", "decodeTask", { pixelData: frame(8) })).toBe(false);
  });
});

describe("decodeUncompressedInThread", () => {
  function manager() {
    const sent: unknown[][] = [];
    const workers: WorkerManager = {
      executeTask(...call: unknown[]) {
        sent.push(call);
        return Promise.resolve("from a worker");
      },
    };
    return { workers, sent };
  }

  it("decodes an uncompressed frame with the given decoder and its arguments, not in a worker", async () => {
    const { workers, sent } = manager();
    const decoded: unknown[][] = [];
    decodeUncompressedInThread(workers, (...call) => {
      decoded.push(call);
      return Promise.resolve("decoded here");
    });
    const args = {
      imageFrame: { rows: 2 },
      transferSyntax: EXPLICIT_LE,
      pixelData: frame(8),
      decodeConfig: {},
      options: { a: 1 },
    };

    const answer = workers.executeTask("dicomImageLoader", "decodeTask", args, { priority: 5 });

    await expect(answer).resolves.toBe("decoded here");
    expect(sent).toEqual([]);
    const { imageFrame, pixelData, decodeConfig, options } = args;
    expect(decoded).toEqual([[imageFrame, EXPLICIT_LE, pixelData, decodeConfig, options, undefined]]);
  });

  it("sends everything else to the workers as before, with the same arguments", async () => {
    const { workers, sent } = manager();
    decodeUncompressedInThread(workers, () => Promise.reject(new Error("must not decode here")));
    const jpeg = { transferSyntax: "1.2.840.10008.1.2.4.50", pixelData: frame(8) };

    const answer = workers.executeTask("dicomImageLoader", "decodeTask", jpeg, { priority: 5 });
    await expect(answer).resolves.toBe("from a worker");
    await expect(workers.executeTask("compute", "anything")).resolves.toBe("from a worker");

    expect(sent).toEqual([
      ["dicomImageLoader", "decodeTask", jpeg, { priority: 5 }],
      ["compute", "anything", {}, undefined],
    ]);
  });

  it("passes on the decoder's refusal as the worker's would be", async () => {
    const { workers } = manager();
    decodeUncompressedInThread(workers, () => Promise.reject(new Error("The pixel data is missing")));

    await expect(
      workers.executeTask("dicomImageLoader", "decodeTask", { transferSyntax: EXPLICIT_LE, pixelData: frame(8) }),
    ).rejects.toThrow("The pixel data is missing");
  });
});
