// child_process.fork with IPC: messages both ways, then the child exits.
const cp = require('child_process');
const assert = require('assert');

if (process.argv[2] === 'child') {
  process.on('message', (m) => {
    if (m.cmd === 'square') process.send({ result: m.n * m.n, pid: process.pid });
    if (m.cmd === 'exit') process.disconnect();
  });
  process.send({ ready: true });
} else {
  const c = cp.fork(__filename, ['child']);
  const got = [];
  c.on('message', (m) => {
    if (m.ready) {
      for (const n of [2, 3, 4]) c.send({ cmd: 'square', n });
      return;
    }
    got.push(m.result);
    assert.notStrictEqual(m.pid, process.pid);
    if (got.length === 3) c.send({ cmd: 'exit' });
  });
  c.on('exit', (code) => {
    assert.strictEqual(code, 0);
    assert.deepStrictEqual(got, [4, 9, 16]);
    console.log('ok');
  });
}
