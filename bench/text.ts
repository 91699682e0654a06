/**
 * @module Realistic chat text for the benches: a fixed vocabulary (frequent English and team-chat
 * words, then pronounceable made-up words) drawn with Zipf's law, 3–40 words a message, from a seed,
 * so every run offers the same text. (First written for the archive bench, which it outlived.)
 */
import { mulberry32 } from "./random.ts";

/** The head of the vocabulary: frequent English and team-chat words, most frequent first. */
const COMMON = `the to i a you it is we that for on in this be and of can have will just do with
  it's not at so what are if but get was i'm me my there our from up about know think need all
  now yes ok thanks out one time today going like how when should would let some new also them
  here any could then check team meeting please see work more back tomorrow still sure good make
  did go got code build release deploy fix issue review change test update looks great branch
  merge customer call week after doc plan question yeah already morning before ticket data
  server error user api design sprint demo launch week's problem done next last config support
  report version feature client page link file send share night early late schedule agenda`
  .split(/\s+/)
  .filter((w) => w !== "");

const SYLLABLES =
  "ba be bi bo bu da de di do du fa fe fi fo ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo za ze zi zo an en in on ar er ir or al el il ol".split(
    " ",
  );

/** A vocabulary of `size` distinct words: COMMON, then pronounceable made-up words (2–4 syllables). */
function vocabulary(size: number, random: () => number): string[] {
  const words = [...new Set(COMMON.map((w) => w.replace(/'/g, "")))];
  const seen = new Set(words);
  while (words.length < size) {
    const n = 2 + Math.floor(random() * 3);
    let w = "";
    for (let k = 0; k < n; k++) w += SYLLABLES[Math.floor(random() * SYLLABLES.length)];
    if (!seen.has(w)) {
      seen.add(w);
      words.push(w);
    }
  }
  return words;
}

/** Draws word ranks with Zipf's law (exponent `s`), as word frequencies in text roughly follow. */
function zipf(size: number, s: number, random: () => number): () => number {
  const cdf = new Float64Array(size);
  let total = 0;
  for (let r = 0; r < size; r++) {
    total += 1 / (r + 1) ** s;
    cdf[r] = total;
  }
  return () => {
    const x = random() * total;
    let lo = 0;
    let hi = size - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((cdf[mid] as number) < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

/** A source of message texts of 3–40 words (most short: the count is skewed towards 3). */
export function chatText(seed: number): () => string {
  const random = mulberry32(seed);
  const words = vocabulary(30_000, random);
  const rank = zipf(words.length, 1.05, random);
  return () => {
    const n = 3 + Math.floor(random() ** 2 * 38);
    return Array.from({ length: n }, () => words[rank()]).join(" ");
  };
}
