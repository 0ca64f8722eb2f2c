// zlib: gzip, deflate, brotli round trips (sync and through the thread
// pool) and a stream pipeline.
const zlib = require('zlib');
const { pipeline, Readable, Writable } = require('stream');
const assert = require('assert');
const { promisify } = require('util');

(async () => {
  const data = Buffer.from('zeroboot '.repeat(100000));
  assert.ok(zlib.gunzipSync(zlib.gzipSync(data)).equals(data));
  assert.ok(zlib.inflateSync(zlib.deflateSync(data)).equals(data));
  assert.ok(zlib.brotliDecompressSync(zlib.brotliCompressSync(data)).equals(data));
  const gz = await promisify(zlib.gzip)(data);
  assert.ok(gz.length < data.length / 100);
  assert.ok((await promisify(zlib.gunzip)(gz)).equals(data));
  const out = [];
  await promisify(pipeline)(
    Readable.from([data.subarray(0, 1000), data.subarray(1000)]),
    zlib.createGzip(),
    zlib.createGunzip(),
    new Writable({ write(c, _e, cb) { out.push(c); cb(); } }),
  );
  assert.ok(Buffer.concat(out).equals(data));
  console.log('ok');
})().catch((e) => { console.error(e); process.exit(1); });
