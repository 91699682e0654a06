/**
 * @module The web client's build: client/web (plain TypeScript, no framework) into dist/client,
 * which the web client's Worker (client/web/wrangler.toml) serves as static assets. `npm run build` runs it; `npm start`
 * and `npm test` build first.
 */
import { defineConfig } from "vite";

export default defineConfig({
  root: "client/web",
  base: "/",
  publicDir: "public",
  build: {
    outDir: "../../dist/client",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
    // One small entry: the whole client is a few tens of KB, so splitting would only add requests.
    modulePreload: { polyfill: false },
    reportCompressedSize: true,
  },
  server: { host: "127.0.0.1" },
});
