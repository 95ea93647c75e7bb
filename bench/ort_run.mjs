// The ONNX Runtime peer's timing runner for bench/compare_peers.py (onnxruntime-node 1.30, CPU EP).
//
//   node bench/ort_run.mjs --ort-dir DIR baseline
//       loads onnxruntime-node and nothing else: the node + ORT floor of peak RSS and start-up
//   node bench/ort_run.mjs --ort-dir DIR run --model M.onnx --input IMAGE.f32 --shape 3,H,W
//       [--threads 2] [--repeats 5] [--outputs OUT.json]
//       creates one session (intra-op threads = --threads, inter-op 1, sequential execution,
//       graph optimisation "all", memory pattern off), runs once to warm up, then --repeats timed
//       runs; prints one JSON line {create, warmup, times, detections}. --outputs writes the last
//       run's outputs (name -> {dims, type, base64 of the little-endian data}) for the agreement
//       check, after the timing.
//
// DIR is where bench/install_ort.sh installed onnxruntime-node (default $FPN_ORT_DIR, else
// ~/.cache/fpn-ort). The memory pattern is off (enableMemPattern: false) because it adds 300-450 MB
// to the peak after the first run and buys no time on these graphs (bench/compare_peers.py, trap 4).
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";

function parse(argv) {
  const options = { "ort-dir": process.env.FPN_ORT_DIR || join(homedir(), ".cache", "fpn-ort"),
                    threads: "2", repeats: "5" };
  let command = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith("--")) {
      if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
      options[argv[i].slice(2)] = argv[++i];
    } else if (command === null) {
      command = argv[i];
    } else {
      throw new Error(`unexpected argument ${argv[i]}`);
    }
  }
  if (command !== "baseline" && command !== "run") throw new Error("command: baseline or run");
  return { command, options };
}

async function main() {
  const { command, options } = parse(process.argv.slice(2));
  const require = createRequire(join(options["ort-dir"], "package.json"));
  const ort = require("onnxruntime-node");
  const version = require("onnxruntime-node/package.json").version;
  if (command === "baseline") {
    console.log(JSON.stringify({ version }));
    return;
  }
  for (const name of ["model", "input", "shape"]) {
    if (!options[name]) throw new Error(`run needs --${name}`);
  }
  const threads = parseInt(options.threads, 10);
  const repeats = parseInt(options.repeats, 10);
  const dims = options.shape.split(",").map((d) => parseInt(d, 10));
  const bytes = readFileSync(options.input);
  const data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  if (data.length !== dims.reduce((a, b) => a * b, 1)) {
    throw new Error(`${options.input} holds ${data.length} floats, not ${dims.join("x")}`);
  }
  const input = new ort.Tensor("float32", data, dims);

  let start = performance.now();
  const session = await ort.InferenceSession.create(options.model, {
    executionProviders: ["cpu"],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    enableMemPattern: false,
  });
  const create = (performance.now() - start) / 1000;
  const feeds = { [session.inputNames[0]]: input };

  start = performance.now();
  let outputs = await session.run(feeds);
  const warmup = (performance.now() - start) / 1000;
  const times = [];
  for (let i = 0; i < repeats; i++) {
    start = performance.now();
    outputs = await session.run(feeds);
    times.push((performance.now() - start) / 1000);
  }
  const detections = outputs.scores ? outputs.scores.dims[0] : null;

  if (options.outputs) {
    const saved = {};
    for (const [name, tensor] of Object.entries(outputs)) {
      const view = tensor.data;
      saved[name] = { dims: tensor.dims, type: tensor.type,
                      data: Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString("base64") };
    }
    writeFileSync(options.outputs, JSON.stringify(saved));
  }
  console.log(JSON.stringify({ version, create, warmup, times, detections, threads }));
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
