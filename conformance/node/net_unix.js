// net on a unix socket (a path in the temporary directory): an echo
// server, a client, and a second client after the first one left.
const net = require('net');
const os = require('os');
const path = require('path');
const fs = require('fs');
const assert = require('assert');

const sock = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'conf-unix-')), 's.sock');
const server = net.createServer((c) => c.pipe(c));
function roundTrip(msg) {
  return new Promise((res, rej) => {
    const c = net.connect(sock);
    let got = '';
    c.on('data', (d) => { got += d; if (got.length >= msg.length) c.end(); });
    c.on('close', () => res(got));
    c.on('error', rej);
    c.write(msg);
  });
}
server.listen(sock, async () => {
  try {
    assert.ok(fs.statSync(sock).isSocket());
    assert.strictEqual(await roundTrip('hello over unix'), 'hello over unix');
    const big = 'x'.repeat(1 << 20);
    assert.strictEqual(await roundTrip(big), big);
    server.close(() => console.log('ok'));
  } catch (e) { console.error(e); process.exit(1); }
});
