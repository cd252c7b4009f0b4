// Portcullis demo page. No framework, no inline script or handler (ready for a strict CSP),
// DOM updates through textContent only.
(() => {
  'use strict';

  // The anti-CSRF token: session-bound data, kept in this closure only. Never in localStorage,
  // sessionStorage, IndexedDB or a cookie; gone when the page reloads (then re-read from
  // GET /bff/session).
  let csrfToken = null;

  const $ = (id) => document.getElementById(id);
  const statusLine = $('status');
  const output = $('output');

  function show(title, value) {
    const text = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
    output.textContent = `${title}\n\n${text}`;
  }

  async function body(resp) {
    const type = resp.headers.get('content-type') || '';
    return type.includes('json') ? resp.json() : resp.text();
  }

  // GET /bff/session: 200 with the user and the CSRF token, or 401 without a session.
  async function readSession() {
    const resp = await fetch('/bff/session', { headers: { Accept: 'application/json' } });
    if (resp.status === 401) {
      csrfToken = null;
      return { resp, session: null };
    }
    const session = await body(resp);
    if (resp.ok && session && typeof session.csrfToken === 'string') {
      csrfToken = session.csrfToken;
    }
    return { resp, session };
  }

  function describe(session) {
    // Everything but the token itself.
    return {
      authenticated: session.authenticated,
      user: session.user,
      expiresAt: new Date(session.expiresAt * 1000).toISOString(),
      csrfToken: 'CSRF token held in memory',
    };
  }

  function setStatus(session) {
    if (!session) {
      statusLine.textContent = 'Not signed in.';
      return;
    }
    const who = (session.user && (session.user.name || session.user.email || session.user.sub)) || 'someone';
    statusLine.textContent = `Signed in as ${who}.`;
  }

  // A state-changing request: adds X-CSRF-Token; on a CSRF 403 re-reads the token once and retries.
  async function unsafeFetch(url, init) {
    if (!csrfToken) await readSession();
    // Without a session there is no token: the request goes out without one and the gateway
    // refuses it (403), which is worth seeing in a demo.
    const send = () => fetch(url, {
      ...init,
      headers: csrfToken ? { ...init.headers, 'X-CSRF-Token': csrfToken } : init.headers,
    });
    let resp = await send();
    if (resp.status === 403 && csrfToken) {
      const problem = await resp.clone().json().catch(() => null);
      if (problem && problem.type === 'urn:portcullis:problem:csrf') {
        await readSession();
        resp = await send();
      }
    }
    return resp;
  }

  async function run(title, action) {
    try {
      await action();
    } catch (err) {
      show(`${title}: failed`, String(err && err.message ? err.message : err));
    }
  }

  $('login').addEventListener('click', () => {
    window.location.assign('/bff/login?returnTo=/');
  });

  $('session').addEventListener('click', () => run('GET /bff/session', async () => {
    const { resp, session } = await readSession();
    setStatus(resp.ok ? session : null);
    show(`GET /bff/session → ${resp.status}`, resp.ok ? describe(session) : session);
  }));

  for (const [id, path] of [['orders', '/api/orders'], ['me', '/api/me']]) {
    $(id).addEventListener('click', () => run(`GET ${path}`, async () => {
      const resp = await fetch(path, { headers: { Accept: 'application/json' } });
      show(`GET ${path} → ${resp.status}`, await body(resp));
    }));
  }

  $('create').addEventListener('click', () => run('POST /api/orders', async () => {
    const order = { item: 'Portcullis spring', quantity: 1 + Math.floor(Math.random() * 5) };
    const resp = await unsafeFetch('/api/orders', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(order),
    });
    show(`POST /api/orders → ${resp.status}`, await body(resp));
  }));

  $('logout').addEventListener('click', () => run('POST /bff/logout', async () => {
    const resp = await unsafeFetch('/bff/logout', { method: 'POST', headers: { Accept: 'application/json' } });
    const result = await body(resp);
    show(`POST /bff/logout → ${resp.status}`, result);
    if (!resp.ok) return;
    csrfToken = null;
    setStatus(null);
    // The provider's end-session page (built by Portcullis with client_id, never with a token).
    const url = result && typeof result.logoutUrl === 'string' ? new URL(result.logoutUrl) : null;
    if (url && (url.protocol === 'https:' || url.protocol === 'http:')) {
      window.location.assign(url.href);
    }
  }));

  // On load: the page's own same-origin fetch carries the SameSite=Strict cookie, even right
  // after the login redirect (whose navigation did not).
  run('GET /bff/session', async () => {
    const { resp, session } = await readSession();
    setStatus(resp.ok ? session : null);
  });
})();
