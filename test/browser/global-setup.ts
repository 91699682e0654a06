/**
 * @module Vitest globalSetup of the "browser" project: one app server for the whole run, its base
 * URL provided to the tests as `inject("baseUrl")`. Teardown stops it, whether tests passed or not.
 */
import type { TestProject } from "vitest/node";
import { startApp, stopOnExit } from "./server.ts";

declare module "vitest" {
  export interface ProvidedContext {
    baseUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  stopOnExit();
  const server = await startApp();
  project.provide("baseUrl", server.baseUrl);
  return () => server.stop();
}
