const net = require('net'), http = require('http');
const srv = http.createServer((req, res) => res.end('node http ' + req.url));
srv.listen(0, '127.0.0.1', () => {
  http.get({host: '127.0.0.1', port: srv.address().port, path: '/x'}, res => {
    let b = ''; res.on('data', d => b += d); res.on('end', () => {
      console.log(b); srv.close();
      const u = net.createServer(c => c.pipe(c)).listen('/tmp/n.sock', () => {
        const c = net.connect('/tmp/n.sock', () => c.end('unix echo'));
        c.on('data', d => { console.log(d.toString()); u.close(); });
      });
    });
  });
});
const bad = net.connect(80, '10.1.2.3'); bad.on('error', e => console.log('bad', e.code));
