// http client and server on loopback: GET, POST with a body, chunked
// responses, keep-alive reuse, and a second process (curl-less: node's own
// client in a child) fetching from this one.
const http = require('http');
const cp = require('child_process');
const assert = require('assert');

const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    if (req.url === '/chunked') {
      res.write('part1,');
      setTimeout(() => res.end('part2'), 10);
      return;
    }
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ method: req.method, url: req.url, body }));
  });
});
function request(port, opts, body) {
  return new Promise((res, rej) => {
    const r = http.request({ host: '127.0.0.1', port, ...opts }, (resp) => {
      let data = '';
      resp.on('data', (d) => { data += d; });
      resp.on('end', () => res({ status: resp.statusCode, data }));
    });
    r.on('error', rej);
    r.end(body);
  });
}
server.listen(0, '127.0.0.1', async () => {
  try {
    const { port } = server.address();
    let r = await request(port, { path: '/hello' });
    assert.strictEqual(r.status, 200);
    assert.deepStrictEqual(JSON.parse(r.data), { method: 'GET', url: '/hello', body: '' });
    r = await request(port, { path: '/p', method: 'POST' }, 'payload');
    assert.strictEqual(JSON.parse(r.data).body, 'payload');
    r = await request(port, { path: '/chunked' });
    assert.strictEqual(r.data, 'part1,part2');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < 5; i++) {
      r = await request(port, { path: `/k${i}`, agent });
      assert.strictEqual(JSON.parse(r.data).url, `/k${i}`);
    }
    agent.destroy();
    const child = `require('http').get('http://127.0.0.1:${port}/from-child', (r) => { let d=''; r.on('data', (c) => d += c); r.on('end', () => console.log(JSON.parse(d).url)); })`;
    const out = await new Promise((res, rej) => cp.execFile(process.execPath, ['-e', child], (e, so) => (e ? rej(e) : res(so))));
    assert.strictEqual(out, '/from-child\n');
    server.close(() => console.log('ok'));
  } catch (e) { console.error(e); process.exit(1); }
});
