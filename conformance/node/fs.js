// fs: write/read, append, rename, mkdir -p, readdir, stat, symlink, rm -r,
// streams, and the promise API.
const fs = require('fs');
const os = require('os');
const path = require('path');
const assert = require('assert');

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'conf-fs-'));
  const f = path.join(dir, 'a.txt');
  fs.writeFileSync(f, 'hello');
  fs.appendFileSync(f, ' world');
  assert.strictEqual(fs.readFileSync(f, 'utf8'), 'hello world');
  fs.mkdirSync(path.join(dir, 'x/y/z'), { recursive: true });
  fs.renameSync(f, path.join(dir, 'x/y/z/b.txt'));
  assert.deepStrictEqual(fs.readdirSync(path.join(dir, 'x/y/z')), ['b.txt']);
  const st = fs.statSync(path.join(dir, 'x/y/z/b.txt'));
  assert.strictEqual(st.size, 11);
  assert.ok(st.isFile());
  fs.symlinkSync('x/y/z/b.txt', path.join(dir, 'link'));
  assert.strictEqual(fs.readlinkSync(path.join(dir, 'link')), 'x/y/z/b.txt');
  assert.strictEqual(fs.readFileSync(path.join(dir, 'link'), 'utf8'), 'hello world');
  // Streams through the thread pool.
  const big = Buffer.alloc(1 << 20, 7);
  await fs.promises.writeFile(path.join(dir, 'big'), big);
  const chunks = [];
  await new Promise((res, rej) => fs.createReadStream(path.join(dir, 'big'))
    .on('data', (c) => chunks.push(c)).on('end', res).on('error', rej));
  assert.ok(Buffer.concat(chunks).equals(big));
  const fh = await fs.promises.open(path.join(dir, 'big'), 'r+');
  await fh.write(Buffer.from('xyz'), 0, 3, 10);
  const b = Buffer.alloc(3);
  await fh.read(b, 0, 3, 10);
  await fh.close();
  assert.strictEqual(b.toString(), 'xyz');
  fs.copyFileSync(path.join(dir, 'big'), path.join(dir, 'big2'));
  assert.strictEqual(fs.statSync(path.join(dir, 'big2')).size, 1 << 20);
  fs.rmSync(dir, { recursive: true });
  assert.ok(!fs.existsSync(dir));
  console.log('ok');
})().catch((e) => { console.error(e); process.exit(1); });
