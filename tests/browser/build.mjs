// Bundles the pages (React, the SDK and each page's own code) into dist/ with esbuild.
import { build } from "esbuild";

for (const page of ["use_stream", "v2_chat"]) {
  await build({
    entryPoints: [`src/${page}.jsx`],
    bundle: true,
    minify: true,
    format: "esm",
    define: { "process.env.NODE_ENV": '"production"' },
    outfile: `dist/${page}.js`,
    logLevel: "warning",
  });
}
