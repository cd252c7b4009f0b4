// Sample downstream API for the Portcullis demo (./scripts/demo.sh). No dependencies.
//
//   GET  /orders  -> {"authorized": bool, "orders": [...]}
//   POST /orders  -> 201 {"authorized": bool, "order": {...the posted JSON, "id": "<generated>"}}
//   GET  /me      -> {"authorized": bool, "bearer": "bearer present" | "no bearer"}
//
// "authorized" says whether an `Authorization: Bearer …` header arrived (Portcullis attaches the
// user's access token). The token itself is never decoded, echoed or logged: the browser must
// never see it, and this API shows only that it was there.

import http from 'node:http';
import { randomUUID } from 'node:crypto';

const HOST = '127.0.0.1';
const PORT = Number(process.env.API_PORT || 7001);
const BODY_LIMIT = 16 * 1024;
const MAX_ORDERS = 50;

const orders = [
  { id: 'o-1001', item: 'Portcullis winch', quantity: 1 },
  { id: 'o-1002', item: 'Drawbridge chain (5 m)', quantity: 4 },
  { id: 'o-1003', item: 'Moat water, premium', quantity: 12 },
];

function hasBearer(req) {
  return /^Bearer \S+$/.test(req.headers.authorization || '');
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      // Past the limit, keep reading (and dropping) so the answer is a clean 413.
      if (size <= BODY_LIMIT) chunks.push(chunk);
    });
    req.on('end', () => {
      if (size > BODY_LIMIT) {
        reject(Object.assign(new Error('body too large'), { status: 413 }));
        return;
      }
      try {
        const value = JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null');
        if (value === null || typeof value !== 'object' || Array.isArray(value)) {
          throw new Error('not an object');
        }
        resolve(value);
      } catch {
        reject(Object.assign(new Error('expected a JSON object'), { status: 400 }));
      }
    });
    req.on('error', reject);
  });
}

async function handle(req, res) {
  const authorized = hasBearer(req);
  const path = new URL(req.url, `http://${HOST}`).pathname;
  if (path === '/orders' && req.method === 'GET') {
    return send(res, 200, { authorized, orders });
  }
  if (path === '/orders' && req.method === 'POST') {
    const posted = await readJson(req);
    const order = { ...posted, id: `o-${randomUUID().slice(0, 8)}` };
    orders.push(order);
    if (orders.length > MAX_ORDERS) orders.shift();
    return send(res, 201, { authorized, order });
  }
  if (path === '/me' && req.method === 'GET') {
    return send(res, 200, { authorized, bearer: authorized ? 'bearer present' : 'no bearer' });
  }
  return send(res, 404, { error: 'not found' });
}

const server = http.createServer((req, res) => {
  handle(req, res)
    .catch((err) => send(res, err.status || 500, { error: err.status ? err.message : 'internal error' }))
    .finally(() => {
      // Method, path, status and whether a bearer token came: never a header value.
      console.log(`${req.method} ${req.url.split('?')[0]} -> ${res.statusCode} bearer=${hasBearer(req)}`);
    });
});

server.listen(PORT, HOST, () => console.log(`demo API listening on http://${HOST}:${PORT}`));

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
  });
}
