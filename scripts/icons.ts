/**
 * @module `node scripts/icons.ts`: draws the web app's icons into client/web/public/icons (committed;
 * run again only to change them). A white speech bubble on the accent blue, as PNG (what every
 * browser installs from) at the sizes the manifest lists, plus a maskable variant (the art within
 * the central 80% safe zone, the background to the edges) and a monochrome badge for Android's
 * status bar. Drawn by coverage with 4×4 supersampling, encoded with node:zlib: no image library.
 */
import { writeFileSync } from "node:fs";
import { deflateSync } from "node:zlib";

const ACCENT = [0x2f, 0x6f, 0xed];
const DIR = "client/web/public/icons";

/** Whether (x, y), in units of the icon's side (0..1), is on the bubble. */
function bubble(x: number, y: number, scale: number): boolean {
  const cx = 0.5;
  const cy = 0.46;
  const dx = (x - cx) / (0.3 * scale);
  const dy = (y - cy) / (0.24 * scale);
  if (dx * dx + dy * dy <= 1) return true;
  // The tail: a triangle from under the bubble's left half down to the left.
  return inTriangle((x - cx) / scale, (y - cy) / scale, [-0.17, 0.12], [-0.02, 0.2], [-0.22, 0.33]);
}

function inTriangle(px: number, py: number, a: number[], b: number[], c: number[]): boolean {
  const [ax = 0, ay = 0] = a;
  const [bx = 0, by = 0] = b;
  const [cx = 0, cy = 0] = c;
  const d1 = (px - bx) * (ay - by) - (ax - bx) * (py - by);
  const d2 = (px - cx) * (by - cy) - (bx - cx) * (py - cy);
  const d3 = (px - ax) * (cy - ay) - (cx - ax) * (py - ay);
  const neg = d1 < 0 || d2 < 0 || d3 < 0;
  const pos = d1 > 0 || d2 > 0 || d3 > 0;
  return !(neg && pos);
}

/** Whether (x, y) is inside a rounded square with corner radius r (all in 0..1). */
function rounded(x: number, y: number, r: number): boolean {
  const qx = Math.max(r - x, 0, x - (1 - r));
  const qy = Math.max(r - y, 0, y - (1 - r));
  return qx * qx + qy * qy <= r * r;
}

function png(size: number, pixel: (x: number, y: number) => [number, number, number, number]): Buffer {
  const raw = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y++) {
    raw[y * (size * 4 + 1)] = 0;
    for (let x = 0; x < size; x++) {
      let [r, g, b, alpha] = [0, 0, 0, 0];
      for (let sy = 0; sy < 4; sy++)
        for (let sx = 0; sx < 4; sx++) {
          const [pr, pg, pb, pa] = pixel((x + (sx + 0.5) / 4) / size, (y + (sy + 0.5) / 4) / size);
          // Premultiplied, so edges against transparency do not darken.
          r += pr * pa;
          g += pg * pa;
          b += pb * pa;
          alpha += pa;
        }
      const a = alpha / 16;
      const o = y * (size * 4 + 1) + 1 + x * 4;
      raw[o] = alpha ? Math.round(r / alpha) : 0;
      raw[o + 1] = alpha ? Math.round(g / alpha) : 0;
      raw[o + 2] = alpha ? Math.round(b / alpha) : 0;
      raw[o + 3] = Math.round(a);
    }
  }
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 6; // RGBA
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw, { level: 9 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function crc32(buf: Buffer): number {
  let c = ~0;
  for (const byte of buf) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  }
  return ~c >>> 0;
}

const white: [number, number, number, number] = [255, 255, 255, 255];
const accent: [number, number, number, number] = [...ACCENT, 255] as [number, number, number, number];
const clear: [number, number, number, number] = [0, 0, 0, 0];

for (const size of [192, 512]) {
  writeFileSync(
    `${DIR}/icon-${size}.png`,
    png(size, (x, y) => (!rounded(x, y, 0.22) ? clear : bubble(x, y, 1) ? white : accent)),
  );
  writeFileSync(
    `${DIR}/maskable-${size}.png`,
    png(size, (x, y) => (bubble(x, y, 0.8) ? white : accent)),
  );
}
writeFileSync(
  `${DIR}/badge-96.png`,
  png(96, (x, y) => (bubble(x, y, 1.15) ? white : clear)),
);
console.log(`icons written to ${DIR}`);
