/**
 * @module What a room test client does with each frame it reads, in either runtime (the workerd
 * `Client` of helpers.ts and the Node `NodeRoomSocket` of system/node-socket.ts): keep the events
 * and their bytes, and under flow control confirm what it read as the SDK does.
 */
import {
  type ClientFrame,
  eventsOf,
  Receipts,
  type RoomEvent,
  type ServerFrame,
  utf8Bytes,
} from "../protocol/index.ts";

export class RoomReading {
  readonly events: RoomEvent[] = [];
  /** UTF-8 bytes of the event frames received. */
  eventBytes = 0;
  /** Flow control (sockets opened with `flow=1`): confirms with `received` as the SDK does; false
   * never confirms (a reader that fell behind). */
  confirming: boolean;
  readonly #receipts = new Receipts();

  constructor(confirming = false) {
    this.confirming = confirming;
  }

  /** Takes one frame (with its text); returns the `received` frame to send now, if any. */
  read(frame: ServerFrame, text: string): ClientFrame | null {
    const events = eventsOf(frame);
    if (events.length === 0) return null;
    this.events.push(...events);
    const bytes = utf8Bytes(text);
    this.eventBytes += bytes;
    return this.confirming ? this.#receipts.handled(bytes, (events.at(-1) as RoomEvent).seq) : null;
  }

  /** The `received` frame that confirms every event read so far (null: none yet). */
  confirmAll(): ClientFrame | null {
    const last = this.events.at(-1);
    return last ? this.#receipts.confirm(last.seq) : null;
  }

  get lastSeq(): number {
    return this.events.at(-1)?.seq ?? 0;
  }
}
