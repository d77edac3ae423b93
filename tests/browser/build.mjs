// Bundles the page (React, the SDK and the page's own code) into dist/ with esbuild.
import { build } from "esbuild";

await build({
  entryPoints: ["src/use_stream.jsx"],
  bundle: true,
  minify: true,
  format: "esm",
  define: { "process.env.NODE_ENV": '"production"' },
  outfile: "dist/use_stream.js",
  logLevel: "warning",
});
