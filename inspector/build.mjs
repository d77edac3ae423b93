// Bundles the inspector (Preact and the page's code) into agentstream/inspector/static, which the
// server serves at /inspector and the wheel ships. Run by `npm run build` (scripts/test.sh does).
import { copyFile, mkdir, rm } from "node:fs/promises";
import { build } from "esbuild";

const out = new URL("../agentstream/inspector/static/", import.meta.url);
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  // main.jsx imports style.css: esbuild writes it beside the script as inspector.css.
  entryPoints: { inspector: "src/main.jsx" },
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: out.pathname,
  logLevel: "warning",
});
await copyFile("index.html", new URL("index.html", out));
