// worker_threads: workers computing in parallel, messages, a
// SharedArrayBuffer with Atomics, and a worker's error reaching the parent.
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');
const assert = require('assert');

if (!isMainThread) {
  if (workerData.fail) throw new Error('from the worker');
  const counter = new Int32Array(workerData.sab);
  let sum = 0;
  for (let i = 0; i < workerData.n; i++) { sum += i; Atomics.add(counter, 0, 1); }
  parentPort.postMessage(sum);
} else {
  const sab = new SharedArrayBuffer(4);
  const n = 100000;
  const run = (data) => new Promise((res, rej) => {
    const w = new Worker(__filename, { workerData: data });
    w.on('message', res);
    w.on('error', rej);
  });
  (async () => {
    const sums = await Promise.all([0, 1, 2, 3].map(() => run({ sab, n })));
    for (const s of sums) assert.strictEqual(s, (n * (n - 1)) / 2);
    assert.strictEqual(new Int32Array(sab)[0], 4 * n);
    await assert.rejects(run({ fail: true, sab, n }), /from the worker/);
    console.log('ok');
  })().catch((e) => { console.error(e); process.exit(1); });
}
