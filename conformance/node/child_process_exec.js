// child_process: execSync, exec (through /bin/sh), execFileSync, a pipeline,
// exit codes and stderr.
const cp = require('child_process');
const assert = require('assert');

assert.strictEqual(cp.execSync('echo hi').toString(), 'hi\n');
assert.strictEqual(cp.execSync('printf "a\\nb\\nc\\n" | wc -l').toString().trim(), '3');
assert.strictEqual(cp.execFileSync('echo', ['x', 'y']).toString(), 'x y\n');
let threw = false;
try {
  cp.execSync('echo oops >&2; exit 3', { stdio: 'pipe' });
} catch (e) {
  threw = true;
  assert.strictEqual(e.status, 3);
  assert.strictEqual(e.stderr.toString(), 'oops\n');
}
assert.ok(threw);
const r = cp.spawnSync('sh', ['-c', 'cat'], { input: 'piped' });
assert.strictEqual(r.stdout.toString(), 'piped');
cp.exec('echo async; echo err >&2', (err, stdout, stderr) => {
  assert.ifError(err);
  assert.strictEqual(stdout, 'async\n');
  assert.strictEqual(stderr, 'err\n');
  console.log('ok');
});
