// child_process.spawn: streaming stdout, stdin to a child, exit codes,
// kill with a signal, env and cwd.
const cp = require('child_process');
const assert = require('assert');

function run(cmd, args, opts, input) {
  return new Promise((res, rej) => {
    const c = cp.spawn(cmd, args, opts);
    let out = '';
    c.stdout.on('data', (d) => { out += d; });
    c.on('error', rej);
    c.on('close', (code, signal) => res({ code, signal, out }));
    if (input !== undefined) c.stdin.end(input);
  });
}

(async () => {
  let r = await run('sh', ['-c', 'for i in 1 2 3; do echo $i; done']);
  assert.deepStrictEqual([r.code, r.out], [0, '1\n2\n3\n']);
  r = await run('cat', [], {}, 'through stdin');
  assert.strictEqual(r.out, 'through stdin');
  r = await run('sh', ['-c', 'exit 7']);
  assert.strictEqual(r.code, 7);
  r = await run('sh', ['-c', 'echo $CONF_VAR; pwd'], { env: { CONF_VAR: 'v1', PATH: process.env.PATH }, cwd: '/' });
  assert.strictEqual(r.out, 'v1\n/\n');
  const c = cp.spawn('sleep', ['30']);
  const done = new Promise((res) => c.on('exit', (code, signal) => res(signal)));
  setTimeout(() => c.kill('SIGTERM'), 50);
  assert.strictEqual(await done, 'SIGTERM');
  // Several children at once.
  const outs = await Promise.all([1, 2, 3, 4].map((i) => run('sh', ['-c', `echo ${i}`])));
  assert.deepStrictEqual(outs.map((o) => o.out), ['1\n', '2\n', '3\n', '4\n']);
  console.log('ok');
})().catch((e) => { console.error(e); process.exit(1); });
