// net over TCP on 127.0.0.1: an echo server on an ephemeral port, several
// clients at once, and a refused connect to a closed port.
const net = require('net');
const assert = require('assert');

const server = net.createServer((c) => c.pipe(c));
function roundTrip(port, msg) {
  return new Promise((res, rej) => {
    const c = net.connect(port, '127.0.0.1');
    let got = '';
    c.on('data', (d) => { got += d; if (got.length >= msg.length) c.end(); });
    c.on('close', () => res(got));
    c.on('error', rej);
    c.write(msg);
  });
}
server.listen(0, '127.0.0.1', async () => {
  try {
    const { port } = server.address();
    assert.ok(port > 0);
    const msgs = ['a', 'bb', 'ccc', 'd'.repeat(100000)];
    assert.deepStrictEqual(await Promise.all(msgs.map((m) => roundTrip(port, m))), msgs);
    server.close(async () => {
      try {
        await roundTrip(port, 'x');
        throw new Error('connect to a closed port succeeded');
      } catch (e) {
        assert.strictEqual(e.code, 'ECONNREFUSED');
      }
      console.log('ok');
    });
  } catch (e) { console.error(e); process.exit(1); }
});
