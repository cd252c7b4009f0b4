// The demo PWA's service worker. It caches the app shell (static files) in a versioned cache and
// nothing else:
//   - requests under /bff/ (login, session, logout, ...) and /api/ (the proxied APIs) are never
//     answered from or stored in a cache: the handler returns without respondWith(), so the
//     browser sends them to the network untouched (cookies, CSRF header, redirects and all);
//   - other origins, and every method but GET, are left alone too;
//   - navigations go to the network first (a fresh document, a fresh CSP nonce); only when the
//     network is down is the cached shell ("/") shown, so the app and its offline notes open
//     offline;
//   - shell files (and /vendor/*, the SDK's modules) also go to the network first, so an edited
//     app is seen at once (the gateway's ETags make that a cheap 304); a successful answer
//     refreshes the cached copy, which is used only when the network fails (offline).
// Bump VERSION when the shell changes: the old caches are deleted on activation.
const VERSION = 'v1';
const CACHE = `portcullis-demo-shell-${VERSION}`;
const SHELL = [
  '/',
  '/app.js',
  '/style.css',
  '/manifest.webmanifest',
  '/icon.svg',
  '/vendor/portcullis-client/index.js',
];
const NEVER = ['/bff/', '/api/'];

function neverCached(url) {
  return url.pathname === '/bff' || url.pathname === '/api' || NEVER.some((p) => url.pathname.startsWith(p));
}

function cacheable(url) {
  return SHELL.includes(url.pathname) || (url.pathname.startsWith('/vendor/') && url.pathname !== VENDOR_LIST);
}

// The SDK's modules, listed by scripts/build-pwa.sh when it copies them.
const VENDOR_LIST = '/vendor/portcullis-client/precache.json';

async function shellFiles() {
  try {
    const response = await fetch(VENDOR_LIST, { cache: 'no-cache' });
    const list = response.ok ? await response.json() : [];
    const vendor = Array.isArray(list) ? list.filter((p) => typeof p === 'string' && p.startsWith('/vendor/')) : [];
    return [...new Set([...SHELL, ...vendor])];
  } catch {
    return SHELL;
  }
}

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(await shellFiles());
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(
        keys.filter((k) => k.startsWith('portcullis-demo-shell-') && k !== CACHE).map((k) => caches.delete(k)),
      ))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  // Not ours to touch: straight to the network, exactly as the page sent it.
  if (request.method !== 'GET' || url.origin !== self.location.origin || neverCached(url)) {
    return;
  }
  if (request.mode === 'navigate') {
    event.respondWith(
      fetch(request).catch(async () => (await caches.match('/', { cacheName: CACHE })) || Response.error()),
    );
    return;
  }
  if (!cacheable(url)) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const response = await fetch(request);
      if (response.ok && response.type === 'basic') {
        await cache.put(url.pathname, response.clone());
      }
      return response;
    } catch (err) {
      const hit = await cache.match(url.pathname);
      if (hit) return hit;
      throw err;
    }
  })());
});
