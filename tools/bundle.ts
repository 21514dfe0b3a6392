// `deno task build`: brings src/shaders.gen.ts up to date (tools/build.ts), then bundles src/mod.ts into
// dist/pretext.js, one ES module for a web app. `--check` fails if src/shaders.gen.ts is stale and bundles in
// memory only. Deno task appends arguments to the last command, so this one script runs both steps.
import * as esbuild from "esbuild";
import { parseArgs } from "node:util";

const root = new URL("../", import.meta.url);

/** esbuild options shared by the library bundle and the browser test bundle. */
export const browserModule = { bundle: true, format: "esm", platform: "browser", target: "es2022" } as const;

/** Bundles src/mod.ts; `outfile` writes it there, otherwise the text is returned without touching the disk. */
export async function bundleLibrary(outfile?: string): Promise<string> {
  const result = await esbuild.build({
    ...browserModule,
    entryPoints: [new URL("src/mod.ts", root).pathname],
    write: false,
    logLevel: "error",
  });
  const text = result.outputFiles[0].text;
  if (outfile) {
    Deno.mkdirSync(new URL(".", new URL(outfile, root)), { recursive: true });
    Deno.writeTextFileSync(new URL(outfile, root), text);
  }
  return text;
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { check: { type: "boolean" } } });
  const shaders = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("build.ts", import.meta.url).pathname, ...(values.check ? ["--check"] : [])],
  }).spawn().status;
  if (!shaders.success) Deno.exit(shaders.code);
  const text = await bundleLibrary(values.check ? undefined : "dist/pretext.js");
  await esbuild.stop();
  if (!values.check) console.log(`wrote dist/pretext.js (${(text.length / 1024).toFixed(0)} KiB)`);
}
