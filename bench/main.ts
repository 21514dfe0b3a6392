// `deno task bench [--quick] [--json FILE] [--only SECTION]`: measures the adapter's ceilings, then runs the
// core section and every other bench/<section>.ts (each exports `bench(ctx)`), printing one table.
import { parseArgs } from "node:util";
import { init } from "../src/mod.ts";
import { Bench } from "./lib.ts";
import { measureCeilings } from "./core.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { quick: { type: "boolean", default: false }, json: { type: "string" }, only: { type: "string" } },
});

const here = new URL("./", import.meta.url);
const NOT_SECTIONS = ["lib", "main", "core"];
const others = [...Deno.readDirSync(here)]
  .filter((e) => e.isFile && e.name.endsWith(".ts"))
  .map((e) => e.name.slice(0, -3))
  .filter((name) => !NOT_SECTIONS.includes(name))
  .sort();
const sections = ["core", ...others].filter((name) => !values.only || name === values.only);
if (sections.length === 0) throw new Error(`--only ${values.only}: no section bench/${values.only}.ts`);

const started = performance.now();
const engine = await init();
const ctx = new Bench(engine, values.quick);
console.log(
  `adapter: ${engine.adapterName}; GPU time from ${ctx.timestamps ? "timestamp queries" : "wall time"}` +
    `${values.quick ? "; --quick" : ""}`,
);
ctx.header();
await measureCeilings(ctx);
console.log(
  `ceilings: copy ${ctx.ceilings.copyGBps.toFixed(1)} GB/s, fma ${ctx.ceilings.fmaGFLOPs.toFixed(1)} GFLOP/s`,
);

const failed: string[] = [];
for (const name of sections) {
  try {
    const section = await import(new URL(`${name}.ts`, here).href);
    await section.bench(ctx);
  } catch (e) {
    failed.push(name);
    console.error(`section ${name} failed: ${(e as Error).stack ?? e}`);
  }
}

if (values.json) {
  Deno.writeTextFileSync(values.json, JSON.stringify(ctx.json(), null, 2) + "\n");
  console.log(`wrote ${values.json}`);
}
console.log(`${((performance.now() - started) / 1000).toFixed(1)} s`);
engine.destroy();
if (failed.length) {
  console.error(`failed sections: ${failed.join(", ")}`);
  Deno.exit(1);
}
