/**
 * @module Chat text for the pipeline benches: messages of 3–40 words drawn with Zipf's law from a
 * vocabulary of 30,000 (bench/corpus.ts, the search bench's generator, at a smaller size), from a
 * seed, so every run offers the same text.
 */
import { corpusFrom } from "./corpus.ts";
import { mulberry32 } from "./random.ts";

/** A source of message texts of 3–40 words (most short: the count is skewed towards 3). */
export function chatText(seed: number): () => string {
  const random = mulberry32(seed);
  const corpus = corpusFrom(30_000, 1.05, random);
  return () => {
    const n = 3 + Math.floor(random() ** 2 * 38);
    return Array.from({ length: n }, () => corpus.words[corpus.rank(random)]).join(" ");
  };
}
