// The page side of test/browser_test.ts: bundled after every test/*_test.ts (whose test() calls fill
// harness.ts's registry in a browser), it hands the Deno side a way to run them one at a time.
import { registry, sharedEngine } from "../harness.ts";

export interface PageRunner {
  /** "vendor architecture description" of navigator.gpu's adapter, or null when there is none. */
  adapter(): Promise<string | null>;
  names(): string[];
  /** Runs registry[index]; resolves to null on success, else what was thrown (stack frames point into the bundle). */
  run(index: number): Promise<{ name: string; message: string; stack: string } | null>;
}

const runner: PageRunner = {
  async adapter() {
    const adapter = await navigator.gpu?.requestAdapter();
    if (!adapter) return null;
    const { vendor, architecture, description } = adapter.info;
    return [vendor, architecture, description].filter(Boolean).join(" ");
  },
  names: () => registry.map((t) => t.name),
  async run(index) {
    try {
      await registry[index].fn(await sharedEngine());
      return null;
    } catch (e) {
      const { name = "Error", message = String(e), stack = "" } = e instanceof Error ? e : {};
      return { name, message, stack: stack.split("\n").filter((l) => /^\s+at /.test(l)).join("\n") };
    }
  },
};

(globalThis as unknown as { pretextTests: PageRunner }).pretextTests = runner;
