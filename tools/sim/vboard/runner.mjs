// Runs the unchanged firmware in the MicroPython WebAssembly port.
// Beneath the firmware's board layer are the simulated ESP32 port modules (tests/esp32_fakes);
// they call `simhost.call(json)`: each call is written to stdout as one line marked with \x01
// and answered by one line on stdin from the host simulator (tools/sim/vboard/board.py), which
// owns virtual time, pin levels, the radio and RTC memory. What the firmware prints goes to
// stdout unmarked (its serial console).
// usage: node runner.mjs FLASH_DIR   (FLASH_DIR holds the device filesystem to load)
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";

const flashDir = process.argv[2];
let inbuf = Buffer.alloc(0);

function readLine() {
  for (;;) {
    const i = inbuf.indexOf(10);
    if (i >= 0) {
      const line = inbuf.subarray(0, i).toString();
      inbuf = inbuf.subarray(i + 1);
      return line;
    }
    const chunk = Buffer.alloc(65536);
    let n;
    try {
      n = fs.readSync(0, chunk, 0, chunk.length, null);
    } catch (e) {
      if (e.code === "EAGAIN") continue;
      throw e;
    }
    if (n === 0) process.exit(0); // host went away: power off
    inbuf = Buffer.concat([inbuf, chunk.subarray(0, n)]);
  }
}

function call(request) {
  fs.writeSync(1, "\x01" + request + "\n");
  return readLine();
}

const mp = await loadMicroPython({
  heapsize: 512 * 1024,  // ESP32 with MicroPython has ~110-160 KB free; see README for why more here
  stdout: (line) => fs.writeSync(1, line.replaceAll("\x01", "") + "\n"),
  stderr: (line) => fs.writeSync(2, line + "\n"),
});
mp.registerJsModule("simhost", { call });

function copyTree(src, dst) {
  mp.FS.mkdirTree(dst);
  for (const name of fs.readdirSync(src)) {
    const s = path.join(src, name);
    if (fs.statSync(s).isDirectory()) copyTree(s, dst + "/" + name);
    else mp.FS.writeFile(dst + "/" + name, fs.readFileSync(s));
  }
}
copyTree(flashDir, "/flash");
mp.FS.chdir("/flash");

// Flash survives power loss: mirror every file the firmware writes, renames or deletes under
// /flash back to FLASH_DIR, which the host boots the next power-on from. RTC memory lives on
// the host and is wiped at power loss; the in-memory FS survives deep sleep (same process).
function hostPath(p) {
  const abs = p.startsWith("/") ? p : mp.FS.cwd() + "/" + p;
  return abs.startsWith("/flash/") ? path.join(flashDir, abs.slice("/flash/".length)) : null;
}
const fsClose = mp.FS.close.bind(mp.FS);
mp.FS.close = (stream) => {
  const written = (stream.flags & 3) !== 0 && stream.path;
  const r = fsClose(stream);
  const hp = written ? hostPath(stream.path) : null;
  if (hp) fs.writeFileSync(hp, mp.FS.readFile(stream.path));
  return r;
};
const fsRename = mp.FS.rename.bind(mp.FS);
mp.FS.rename = (a, b) => {
  const r = fsRename(a, b);
  const ha = hostPath(a), hb = hostPath(b);
  if (ha && hb && fs.existsSync(ha)) fs.renameSync(ha, hb);
  return r;
};
const fsUnlink = mp.FS.unlink.bind(mp.FS);
mp.FS.unlink = (p) => {
  const r = fsUnlink(p);
  const hp = hostPath(p);
  if (hp && fs.existsSync(hp)) fs.unlinkSync(hp);
  return r;
};

try {
  mp.runPython(`
import sys
sys.path.insert(0, '/flash')
_base = set(sys.modules)
while True:
    for _m in list(sys.modules):
        if _m not in _base:
            del sys.modules[_m]
    try:
        import main
    except BaseException as _e:
        if type(_e).__name__ == "Reboot":  # _port.Reboot: the chip restarts
            continue
        raise
    break
`);
  call(JSON.stringify({ op: "halt" }));
} catch (error) {
  call(JSON.stringify({ op: "crash", error: String(error.message || error) }));
}
process.exit(0);
