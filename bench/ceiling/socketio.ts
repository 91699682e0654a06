/**
 * @module Bench ceiling "Socket.IO + SQLite": the classic single-process chat server, for comparing
 * Parley with what a plain Node server on the same machine does.
 *
 * A client connects over Socket.IO (WebSocket transport) with `?room=<name>` and joins that room.
 * Each `send` event's payload is inserted into SQLite (node:sqlite) under `seq` = the room's
 * previous + 1, in its own transaction with `journal_mode=WAL` and `synchronous=FULL`, so the WAL is
 * fsynced before the insert returns; only then is `event` `{seq, frame}` emitted to the whole room,
 * the sender included (as with BareDurable, the sender takes its own copy as its ack). No auth, no
 * validation beyond the room name. Never deployed.
 *
 * Environment: `PORT` (bound on 127.0.0.1), `SOCKETIO_DB` (the database file). Routes besides
 * Socket.IO's: `GET /healthz`, and `GET /socketio/:room/info`, answered as the Durable Object
 * ceilings answer theirs (bench/eviction.ts): one instance for the life of the process, and the
 * room's socket count.
 */
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { DatabaseSync } from "node:sqlite";
import { Server } from "socket.io";

const port = Number(process.env.PORT);
const file = process.env.SOCKETIO_DB;
if (!Number.isInteger(port) || port <= 0 || !file) {
  process.stderr.write("socketio ceiling: set PORT and SOCKETIO_DB\n");
  process.exit(2);
}

const db = new DatabaseSync(file);
db.exec(`PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS log (room TEXT NOT NULL, seq INTEGER NOT NULL, frame TEXT NOT NULL,
  PRIMARY KEY (room, seq)) WITHOUT ROWID;`);
const insert = db.prepare("INSERT INTO log (room, seq, frame) VALUES (?, ?, ?)");
const lastSeq = db.prepare("SELECT COALESCE(MAX(seq), 0) AS seq FROM log WHERE room = ?");
/** Each room's last seq, read from the log the first time the room is used. */
const seqs = new Map<string, number>();

const instance = randomUUID();
const born = Date.now();
const ROOM = /^[A-Za-z0-9_-]{1,128}$/;
const INFO = /^\/socketio\/([A-Za-z0-9_-]{1,128})\/info$/;

const http = createServer((req, res) => {
  const path = new URL(req.url ?? "/", "http://localhost").pathname;
  const info = INFO.exec(path);
  if (req.method === "GET" && (path === "/healthz" || info)) {
    const body = info
      ? { instance, born, sockets: io.sockets.adapter.rooms.get(info[1] as string)?.size ?? 0 }
      : { ok: true };
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
    return;
  }
  res.writeHead(404).end("not found\n");
});

const io = new Server(http, {
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  // The bench's 500-receiver rooms emit faster than the default 1 MB frame limit ever matters, but a
  // padded message must not be refused.
  maxHttpBufferSize: 16 * 1024 * 1024,
});

// Before the namespace CONNECT is answered: a refused socket gets CONNECT_ERROR, never a ready.
io.use((socket, next) => {
  const room = socket.handshake.query.room;
  next(
    typeof room === "string" && ROOM.test(room)
      ? undefined
      : new Error("room must match [A-Za-z0-9_-]{1,128}"),
  );
});

io.on("connection", (socket) => {
  const room = socket.handshake.query.room as string;
  socket.join(room);
  socket.on("send", (frame: unknown) => {
    if (typeof frame !== "object" || frame === null) return;
    const seq = (seqs.get(room) ?? Number((lastSeq.get(room) as { seq: number }).seq)) + 1;
    insert.run(room, seq, JSON.stringify(frame));
    seqs.set(room, seq);
    io.to(room).emit("event", { seq, frame });
  });
});

http.listen(port, "127.0.0.1");
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    io.close();
    db.close();
    process.exit(0);
  });
}
