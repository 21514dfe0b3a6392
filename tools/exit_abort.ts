// `deno run -A tools/exit_abort.ts CMD ARGS...`: runs a test command, passing its output through, and exits
// with its status, except for one case: the command aborted (SIGABRT) after printing a summary in which no
// test failed. Deno reaches llvmpipe here through wgpu's GL backend and glvnd's libEGL, and a process that used
// it sometimes aborts at exit with glibc's "double free or corruption": a thread exiting during exit() frees
// its libEGL thread state (gfx-rs/wgpu#4285; docs/architecture.md has the core dump), nothing of pretext's.
// That abort is reported loudly and not counted as a failure; any failed test, or an abort before the
// summary, still is.
const [cmd, ...args] = Deno.args;
const child = new Deno.Command(cmd === "deno" ? Deno.execPath() : cmd, {
  args,
  stdout: "piped",
  stderr: "inherit",
})
  .spawn();
let tail = "";
const decoder = new TextDecoder();
for await (const chunk of child.stdout) {
  await Deno.stdout.write(chunk);
  tail = (tail + decoder.decode(chunk, { stream: true })).slice(-4096);
}
const status = await child.status;
// deno test's summary, colours stripped: "ok | 215 passed | 0 failed (3m36s)".
const plain = tail.replace(new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g"), "");
const passed = /^ok \| \d+ passed(?: \(\d+ steps\))? \| 0 failed/m.test(plain);
if (status.signal === "SIGABRT" && passed) {
  console.error(`exit_abort: every test passed, then the process aborted at exit (llvmpipe; see the header)`);
  Deno.exit(0);
}
Deno.exit(status.code);
