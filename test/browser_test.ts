// Runs the whole suite again in headless Chromium: esbuild bundles every test/*_test.ts (found at run time) with
// test/browser/runner.ts, Deno serves the bundle from 127.0.0.1, puppeteer-core drives Debian's chromium, and each
// browser test is reported as a step "chromium: <name>". The one test file that uses Deno APIs (it is not bundled),
// so it also holds the checks that read files: the library bundle, README.md's example and the demo page.
import * as esbuild from "esbuild";
import puppeteer, { type Page } from "puppeteer-core";
import { browserModule, bundleLibrary } from "../tools/bundle.ts";
import { serveRepository } from "../tools/serve.ts";
import type { PageRunner } from "./browser/runner.ts";
import { assert, assertEquals } from "./util.ts";

declare global {
  // Set in the page by test/browser/runner.ts.
  var pretextTests: PageRunner;
}

const CHROMIUM = Deno.env.get("CHROMIUM") ?? "/usr/bin/chromium";
// Without the networking flags Chromium keeps dialling Google's hosts, which a closed network refuses. SwiftShader
// (Chromium's CPU Vulkan) gives the adapter on a machine without a GPU; only --enable-unsafe-webgpu is needed.
const CHROMIUM_FLAGS = [
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];
// SwiftShader runs kernels on the CPU: the biggest tests (64M elements, >65,535 workgroups) take 1-2 minutes.
const PER_TEST_MS = 180_000;
const PAGE = `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>pretext tests</title>
<script type="module" src="/tests.js"></script>`;

const testDir = new URL("./", import.meta.url);

// BROWSER_TESTS=reduce,matmul runs only the test files whose names contain one of those words.
const only = Deno.env.get("BROWSER_TESTS")?.split(",");

function testFiles(): string[] {
  return [...Deno.readDirSync(testDir)]
    .filter((e) => e.isFile && e.name.endsWith("_test.ts") && e.name !== "browser_test.ts")
    .filter((e) => !only || only.some((word) => e.name.includes(word)))
    .map((e) => e.name)
    .sort();
}

async function bundleTests(files: string[]): Promise<string> {
  const contents = [...files, "browser/runner.ts"].map((f) => `import "./${f}";`).join("\n");
  const result = await esbuild.build({
    ...browserModule,
    stdin: { contents, resolveDir: testDir.pathname, sourcefile: "browser-entry.ts", loader: "ts" },
    write: false,
    logLevel: "error",
  });
  return result.outputFiles[0].text;
}

class Timeout extends Error {
  override name = "Timeout";
}

function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Timeout(`${what} took longer than ${ms / 1000} s`)), ms);
  });
  return Promise.race([work, limit]).finally(() => clearTimeout(timer));
}

Deno.test({
  name: "chromium: every test/*_test.ts runs in headless Chromium",
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  try {
    Deno.statSync(CHROMIUM);
  } catch {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM to its path)`);
  }
  const files = testFiles();
  const bundle = await bundleTests(files).finally(() => esbuild.stop());
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/") return new Response(PAGE, { headers: { "content-type": "text/html" } });
    if (path === "/tests.js") return new Response(bundle, { headers: { "content-type": "text/javascript" } });
    return new Response("not found", { status: 404 });
  });
  // A fresh browser to start with, and again after a test times out: the timed-out test's GPU work would
  // otherwise keep SwiftShader busy for the tests after it.
  const open = async (): Promise<Page> => {
    const browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_FLAGS,
    });
    try {
      const page = await browser.newPage();
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(String(e)));
      page.on("console", (m) => console.log(`[chromium] ${m.text()}`));
      await page.goto(`http://127.0.0.1:${server.addr.port}/`);
      await page.waitForFunction(() => "pretextTests" in globalThis, { timeout: 60_000 }).catch((e) => {
        throw new Error(`the test bundle did not load: ${[...pageErrors, e.message].join("; ")}`);
      });
      return page;
    } catch (e) {
      await browser.close();
      throw e;
    }
  };
  try {
    let page = await open();
    try {
      const adapter = await page.evaluate(() => pretextTests.adapter());
      assert(
        adapter,
        `Chromium's navigator.gpu.requestAdapter() gave no adapter (flags: ${CHROMIUM_FLAGS.join(" ")})`,
      );
      const names = await page.evaluate(() => pretextTests.names());
      assert(names.length > 0, `no test registered in the page from ${files.join(", ")}`);

      const start = performance.now();
      let failed = 0;
      for (const [i, name] of names.entries()) {
        const passed = await t.step(`chromium: ${name}`, async () => {
          const run = page.evaluate((index) => pretextTests.run(index), i);
          const error = await withTimeout(run, PER_TEST_MS, name).catch(async (e) => {
            if (e instanceof Timeout) {
              await page.browser().close();
              page = await open();
            }
            throw e;
          });
          if (error) throw Object.assign(new Error(`${error.message}\n${error.stack}`), { name: error.name });
        });
        if (!passed) failed++;
      }
      const seconds = ((performance.now() - start) / 1000).toFixed(1);
      console.log(
        `chromium (${adapter}): ${names.length} tests from ${files.length} files, ${failed} failed, ${seconds} s`,
      );
    } finally {
      await page.browser().close();
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test({
  name: "examples/browser.html draws SimCLR views with the bundled library in Chromium",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const server = await serveRepository(0);
  const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`http://127.0.0.1:${server.addr.port}/examples/browser.html`);
    await page.waitForFunction(() => "demo" in globalThis, { timeout: 60_000 }).catch((e) => {
      throw new Error(`the page never finished: ${[...errors, e.message].join("; ")}`);
    });
    const demo = await page.evaluate(() => (globalThis as unknown as { demo: Record<string, unknown> }).demo);
    assert(!demo.error, `the page failed: ${demo.error}`);
    assertEquals(demo, { views: 6, live: 0 }, "views drawn and tensors left");
    // Every view canvas holds a picture: more than one distinct pixel.
    const distinct = await page.evaluate(() =>
      [...document.querySelectorAll("canvas")].slice(1).map((c) => {
        const data = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data;
        return new Set(new Uint32Array(data.buffer)).size;
      })
    );
    assert(distinct.length === 6 && distinct.every((n) => n > 1), `distinct pixels per view: ${distinct}`);
  } finally {
    await browser.close();
    await server.shutdown();
  }
});

Deno.test("deno task build: src/mod.ts bundles into one ES module with the whole API and its shaders", async () => {
  const text = await bundleLibrary().finally(() => esbuild.stop());
  const dist = await import(`data:text/javascript,${encodeURIComponent(text)}`);
  const src = await import("../src/mod.ts");
  assertEquals(Object.keys(dist).sort(), Object.keys(src).sort(), "bundle exports");
  const readmeApi = ["init", "grad", "noGrad", "matmul", "relu", "sum", "add", "mul", "Tensor", "ShapeError"];
  for (const name of readmeApi) {
    assert(typeof dist[name] === "function", `the bundle does not export ${name}`);
  }
  // A kernel run through the bundle shows the shaders were inlined.
  const engine = await dist.init();
  try {
    const y = dist.relu(engine.tensor([-1, 2, -3, 4], [4]));
    assertEquals(Array.from(await y.toArray()), [0, 2, 0, 4], "relu through the bundle");
  } finally {
    engine.destroy();
  }
});

Deno.test({
  name: "README: the ten-line example runs against src/mod.ts",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const readme = Deno.readTextFileSync(new URL("../README.md", import.meta.url));
  const code = readme.match(/```ts\n([\s\S]*?)```/)?.[1];
  assert(code?.includes('from "./src/mod.ts"'), "README.md has a ts example importing ./src/mod.ts");
  const file = Deno.makeTempFileSync({ suffix: ".ts" });
  Deno.writeTextFileSync(
    file,
    code!.replace('"./src/mod.ts"', JSON.stringify(new URL("../src/mod.ts", import.meta.url).href)),
  );
  const printed: unknown[][] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => printed.push(args);
  try {
    await import(new URL(`file://${file}`).href);
  } finally {
    console.log = log;
    Deno.removeSync(file);
  }
  assertEquals(printed.length, 1, "lines the example prints");
  const [loss] = printed[0] as [Float32Array];
  assert(loss.length === 1 && Number.isFinite(loss[0]) && loss[0] > 0, `the example's loss: ${loss}`);
});
