// Run a Python script in real MicroPython (WebAssembly port from npm).
// usage: node tests/mp_run.mjs MODULE_DIR SCRIPT.py
// Every *.py in MODULE_DIR is copied to /flash, which is put on sys.path.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const [moduleDir, scriptPath] = process.argv.slice(2);
if (!moduleDir || !scriptPath) {
  console.error("usage: node mp_run.mjs MODULE_DIR SCRIPT.py");
  process.exit(2);
}
const mp = await loadMicroPython({ stdout: (line) => process.stdout.write(line + "\n") });
mp.FS.mkdirTree("/flash");
for (const name of readdirSync(moduleDir)) {
  if (name.endsWith(".py")) mp.FS.writeFile("/flash/" + name, readFileSync(join(moduleDir, name)));
}
try {
  mp.runPython("import sys\nsys.path.insert(0, '/flash')\n" + readFileSync(scriptPath, "utf8"));
} catch (err) {
  console.error(String(err));
  process.exit(1);
}
