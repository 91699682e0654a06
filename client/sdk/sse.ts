/** @module A Server-Sent Events parser over any byte stream (fetch bodies in browsers, Node and
 * workerd alike), so the SDK can send its credential header, which EventSource cannot. */
export interface SseFrame {
  id?: string;
  event: string;
  data: string;
}

export class SseParser {
  #buffer = "";
  readonly #decoder = new TextDecoder();

  /** Feeds bytes; returns the frames they completed (comment-only blocks are skipped). */
  push(chunk: Uint8Array): SseFrame[] {
    this.#buffer += this.#decoder.decode(chunk, { stream: true });
    const frames: SseFrame[] = [];
    let cut = this.#buffer.indexOf("\n\n");
    while (cut >= 0) {
      const block = this.#buffer.slice(0, cut);
      this.#buffer = this.#buffer.slice(cut + 2);
      const frame: SseFrame = { event: "message", data: "" };
      let fields = 0;
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        fields += 1;
        if (field === "id") frame.id = value;
        else if (field === "event") frame.event = value;
        else if (field === "data") frame.data += frame.data === "" ? value : `\n${value}`;
      }
      if (fields > 0) frames.push(frame);
      cut = this.#buffer.indexOf("\n\n");
    }
    return frames;
  }
}
