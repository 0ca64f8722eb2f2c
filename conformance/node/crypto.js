// crypto: hashes, HMAC, random bytes, AES-GCM, key pairs with signatures,
// pbkdf2 and scrypt on the thread pool, webcrypto.
const crypto = require('crypto');
const assert = require('assert');
const { promisify } = require('util');

(async () => {
  assert.strictEqual(crypto.createHash('sha256').update('abc').digest('hex'),
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  assert.strictEqual(crypto.createHmac('sha256', 'key').update('msg').digest('hex'),
    '2d93cbc1be167bcb1637a4a23cbff01a7878f0c50ee833954ea5221bb1b8c628');
  const a = crypto.randomBytes(32);
  const b = crypto.randomBytes(32);
  assert.ok(!a.equals(b));
  const key = crypto.randomBytes(32);
  const iv = crypto.randomBytes(12);
  const c = crypto.createCipheriv('aes-256-gcm', key, iv);
  const enc = Buffer.concat([c.update('secret'), c.final()]);
  const tag = c.getAuthTag();
  const d = crypto.createDecipheriv('aes-256-gcm', key, iv);
  d.setAuthTag(tag);
  assert.strictEqual(Buffer.concat([d.update(enc), d.final()]).toString(), 'secret');
  const { publicKey, privateKey } = await promisify(crypto.generateKeyPair)('ec', { namedCurve: 'P-256' });
  const sig = crypto.sign('sha256', Buffer.from('data'), privateKey);
  assert.ok(crypto.verify('sha256', Buffer.from('data'), publicKey, sig));
  const k1 = await promisify(crypto.pbkdf2)('pw', 'salt', 1000, 32, 'sha256');
  assert.strictEqual(k1.toString('hex'), crypto.pbkdf2Sync('pw', 'salt', 1000, 32, 'sha256').toString('hex'));
  const k2 = await promisify(crypto.scrypt)('pw', 'salt', 32);
  assert.strictEqual(k2.length, 32);
  const digest = await crypto.webcrypto.subtle.digest('SHA-256', new TextEncoder().encode('abc'));
  assert.strictEqual(Buffer.from(digest).toString('hex').slice(0, 8), 'ba7816bf');
  assert.match(crypto.randomUUID(), /^[0-9a-f-]{36}$/);
  console.log('ok');
})().catch((e) => { console.error(e); process.exit(1); });
