// `npx deno run -A tools/serve.ts [--port 8000]`: serves the repository on 127.0.0.1 (WebGPU needs a secure
// context, which localhost is) with /dist/pretext.js bundled from src/ on start, so examples/browser.html runs
// in a WebGPU browser without a build step.
import * as esbuild from "esbuild";
import { parseArgs } from "node:util";
import { bundleLibrary } from "./bundle.ts";

const root = new URL("../", import.meta.url);
const TYPES: Record<string, string> = {
  html: "text/html",
  js: "text/javascript",
  png: "image/png",
  css: "text/css",
};

/** A server of the repository's files and the freshly bundled library; `port` 0 picks a free one. */
export async function serveRepository(port: number): Promise<Deno.HttpServer<Deno.NetAddr>> {
  const library = await bundleLibrary().finally(() => esbuild.stop());
  return Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    const type = TYPES[path.split(".").pop() ?? ""];
    if (path === "/dist/pretext.js") return new Response(library, { headers: { "content-type": type } });
    const file = new URL(`.${path}`, root);
    // Only files inside the repository, and only the kinds a page loads.
    if (!type || !file.pathname.startsWith(root.pathname) || path.includes("..")) {
      return new Response("not found", { status: 404 });
    }
    try {
      return new Response(await Deno.readFile(file), { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { port: { type: "string", default: "8000" } } });
  const server = await serveRepository(Number(values.port));
  console.log(`http://127.0.0.1:${server.addr.port}/examples/browser.html`);
}
