/**
 * @module Realistic random message text for the search benches: a vocabulary of frequent English
 * and team-chat words followed by pronounceable made-up words (names, jargon, typos), drawn with
 * Zipf's law as word frequencies in text roughly follow, 3–40 words a message. Deterministic: a
 * `Corpus` is fixed by its size and seed, and every stream of messages by its own seed, so two
 * designs filled in the same run get the same text whatever order their rooms are filled in.
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

export interface Corpus {
  /** Words by rank (0 = most frequent). Lowercase letters only: every one is a plain FTS5 term. */
  words: string[];
  /** Draws a word rank with Zipf's law from `random`. */
  rank(random: () => number): number;
}

/**
 * `size` distinct words (COMMON without apostrophes, then made-up words of 2–4 syllables) ranked
 * by Zipf's law with exponent `s`. The default size keeps rare words rare at a million messages:
 * at 300,000 words the least frequent ones occur a few times in 15 M words of text.
 */
export function makeCorpus(size = 300_000, s = 1.05, seed = 1234): Corpus {
  return corpusFrom(size, s, mulberry32(seed));
}

/** A corpus as `makeCorpus` makes it, drawing its made-up words from `random` (which a caller may
 * go on drawing from). */
export function corpusFrom(size: number, s: number, random: () => number): Corpus {
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
  const cdf = new Float64Array(size);
  let total = 0;
  for (let r = 0; r < size; r++) {
    total += 1 / (r + 1) ** s;
    cdf[r] = total;
  }
  return {
    words,
    rank(rnd) {
      const x = rnd() * total;
      let lo = 0;
      let hi = size - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if ((cdf[mid] as number) < x) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    },
  };
}

/** A stream of messages, each the word ranks of one text of 3–40 words (more short than long). */
export function messageStream(corpus: Corpus, seed: number): () => number[] {
  const random = mulberry32(seed);
  return () => {
    const n = 3 + Math.floor(random() ** 2 * 38);
    return Array.from({ length: n }, () => corpus.rank(random));
  };
}

export const textOf = (corpus: Corpus, ranks: readonly number[]): string =>
  ranks.map((r) => corpus.words[r]).join(" ");

/** A seed for the stream of (tenant, room): the same room of the same tenant writes the same text in
 * every design and every run. */
export const roomSeed = (tenant: number, room: number): number =>
  (Math.imul(tenant + 1, 0x9e3779b1) ^ Math.imul(room + 1, 0x85ebca6b)) >>> 0;
