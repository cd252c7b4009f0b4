// The Portcullis demo PWA: plain ES modules, no bundler, no framework. Every DOM update goes
// through textContent / createElement (no HTML strings, so Trusted Types never need a policy for
// HTML), and every call to the gateway goes through the @portcullis/client SDK:
//   - client.session()  profile (GET /bff/session; the SDK keeps the CSRF token in a closure),
//   - client.login()    the redirect flow (full-page navigation to /bff/login), or
//     client.handshake() the password form, when the gateway enables it,
//   - client.fetch()    API calls; on POST it adds X-CSRF-Token itself,
//   - client.logout()   POST /bff/logout, then the provider's end-session page,
//   - createVault()     classified storage: notes are `confidential` (AES-GCM in IndexedDB under a
//                       non-extractable key), the layout preference `public` (localStorage). The vault
//                       is bound to the signed-in user (`bindTo(user.sub)`) and cleared whenever there
//                       is no session, so a session that ends without a sign-out (idle timeout,
//                       revocation, back-channel logout) leaves nothing for the next user.
import { createClient, createVault } from '/vendor/portcullis-client/index.js';

const client = createClient({ basePath: '/bff' });
const vault = createVault();

const NOTES_KEY = 'notes';
const PREFS_KEY = 'prefs';

const $ = (id) => document.getElementById(id);

function setState(state) {
  document.body.dataset.state = state;
}

function message(text, kind = 'info') {
  const el = $('message');
  el.textContent = text;
  el.dataset.kind = kind;
}

function errorText(err) {
  return err && err.message ? err.message : String(err);
}

async function guarded(label, action) {
  try {
    await action();
  } catch (err) {
    message(`${label} failed: ${errorText(err)}`, 'error');
  }
}

function replaceChildren(list, items) {
  list.replaceChildren(...items);
}

function li(text) {
  const item = document.createElement('li');
  item.textContent = text;
  return item;
}

// ---- session and profile ----

let currentSession = null;

function showSignedIn(session) {
  currentSession = session;
  const user = session.user || {};
  $('status').textContent = `Signed in as ${user.name || user.email || user.sub || 'someone'}.`;
  $('profile-name').textContent = user.name || '—';
  $('profile-email').textContent = user.email || '—';
  $('profile-sub').textContent = user.sub || '—';
  $('profile-expires').textContent = typeof session.expiresAt === 'number'
    ? new Date(session.expiresAt * 1000).toLocaleString()
    : '—';
  for (const id of ['profile', 'orders', 'notes']) $(id).hidden = false;
  $('signed-out').hidden = true;
}

function showSignedOut(text = 'Not signed in.') {
  currentSession = null;
  $('status').textContent = text;
  for (const id of ['profile', 'orders', 'notes']) $(id).hidden = true;
  $('signed-out').hidden = false;
  replaceChildren($('orders-list'), []);
  replaceChildren($('notes-list'), []);
  $('order-result').textContent = '';
}

// Offline (the gateway cannot be reached; the service worker served the app shell): the notes,
// which live on this device, stay readable and writable.
function showOffline() {
  currentSession = null;
  $('status').textContent = 'Offline: showing the notes stored on this device.';
  for (const id of ['profile', 'orders', 'signed-out']) $(id).hidden = true;
  $('notes').hidden = false;
}

// A network failure (fetch rejects with a TypeError), not an HTTP answer.
function isNetworkError(err) {
  return !navigator.onLine || (err instanceof TypeError && !('status' in err));
}

// The SDK answers null when there is no session; 'offline' when the gateway cannot be reached.
async function loadSession() {
  let session = null;
  try {
    session = await client.session();
  } catch (err) {
    if (isNetworkError(err)) {
      showOffline();
      return 'offline';
    }
    throw err;
  }
  if (session && session.authenticated !== false && session.user) {
    showSignedIn(session);
    return session;
  }
  showSignedOut();
  return null;
}

// ---- orders (an API route through the gateway) ----

function describeOrder(order) {
  const qty = order.quantity != null ? ` × ${order.quantity}` : '';
  return `${order.item || order.id || 'order'}${qty}${order.id ? ` (${order.id})` : ''}`;
}

async function readJson(resp) {
  const type = resp.headers.get('content-type') || '';
  return type.includes('json') ? resp.json() : { text: await resp.text() };
}

async function loadOrders() {
  const resp = await client.fetch('/api/orders', { headers: { Accept: 'application/json' } });
  const body = await readJson(resp);
  if (!resp.ok) {
    replaceChildren($('orders-list'), [li(`GET /api/orders → ${resp.status}`)]);
    return;
  }
  const orders = Array.isArray(body.orders) ? body.orders : null;
  // Any other JSON shape (e.g. a test upstream's echo) is shown as text.
  const items = orders ? orders.map((o) => li(describeOrder(o))) : [li(JSON.stringify(body))];
  replaceChildren($('orders-list'), items.length ? items : [li('No orders yet.')]);
  $('orders').dataset.loaded = String(resp.status);
}

async function createOrder(event) {
  event.preventDefault();
  const order = {
    item: $('order-item').value.trim() || 'Portcullis spring',
    quantity: Math.max(1, Math.min(99, Number($('order-quantity').value) || 1)),
  };
  // No CSRF code here: the SDK adds X-CSRF-Token to every same-origin state-changing request.
  const resp = await client.fetch('/api/orders', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(order),
  });
  const body = await readJson(resp);
  $('order-result').textContent = `POST /api/orders → ${resp.status}`;
  $('order-result').dataset.status = String(resp.status);
  if (resp.ok) {
    message(`Order created: ${describeOrder(body.order || order)}`);
    await loadOrders();
  } else {
    message(`Creating the order failed (${resp.status}).`, 'error');
  }
}

// ---- offline notes (vault class `confidential`) ----

// The vault holds one user's data. Binding it to this user wipes anyone else's first: the previous
// user's session may have ended without a sign-out, with their notes still on this device.
async function bindVault(session) {
  const sub = session.user && session.user.sub;
  if (typeof sub !== 'string' || sub === '') {
    await vault.clear();
    throw new Error('the session shows no `sub` claim (oidc.session_claims): notes need it');
  }
  await vault.bindTo(sub);
}

async function readNotes() {
  const stored = await vault.get(NOTES_KEY);
  if (typeof stored !== 'string') return [];
  try {
    const notes = JSON.parse(stored);
    return Array.isArray(notes) ? notes : [];
  } catch {
    return [];
  }
}

async function renderNotes() {
  const notes = await readNotes();
  replaceChildren(
    $('notes-list'),
    notes.length ? notes.map((n) => li(`${new Date(n.at).toLocaleString()}: ${n.text}`)) : [li('No notes.')],
  );
  $('notes').dataset.count = String(notes.length);
}

async function saveNote(event) {
  event.preventDefault();
  const text = $('note-text').value.trim();
  if (!text) return;
  const notes = await readNotes();
  notes.push({ at: Date.now(), text });
  await vault.put(NOTES_KEY, JSON.stringify(notes), 'confidential');
  $('note-text').value = '';
  await renderNotes();
  message('Note saved (encrypted, on this device only).');
}

// ---- preferences (vault class `public`) ----

async function loadPrefs() {
  let prefs = {};
  try {
    const stored = await vault.get(PREFS_KEY);
    prefs = typeof stored === 'string' ? JSON.parse(stored) : {};
  } catch {
    prefs = {};
  }
  $('pref-compact').checked = prefs.compact === true;
  document.body.classList.toggle('compact', prefs.compact === true);
}

async function savePrefs() {
  const compact = $('pref-compact').checked;
  await vault.put(PREFS_KEY, JSON.stringify({ compact }), 'public');
  document.body.classList.toggle('compact', compact);
}

// ---- sign in / sign out ----

function signIn() {
  // Full-page navigation to /bff/login; the provider's pages; back to this page.
  client.login('/');
}

// The handshake (POST /bff/handshake with username and password), when the gateway enables it.
async function handshake(event) {
  event.preventDefault();
  const username = $('handshake-username').value;
  const password = $('handshake-password').value;
  $('handshake-password').value = '';
  try {
    await client.handshake({ username, password });
  } catch (err) {
    const status = err && typeof err.status === 'number' ? err.status : 0;
    if (status === 404) message('The handshake is not enabled on this gateway: use "Sign in".', 'error');
    else if (status === 401) message('Wrong username or password.', 'error');
    else message(`Sign-in failed: ${errorText(err)}`, 'error');
    return;
  }
  message('');
  await afterSignIn();
}

async function afterSignIn() {
  const session = await loadSession();
  if (session === 'offline') {
    // Who is signed in cannot be checked offline: the notes of the vault's last owner open.
    await guarded('Loading notes', async () => {
      if (await vault.resumeLastOwner()) await renderNotes();
      else replaceChildren($('notes-list'), [li('No notes.')]);
    });
    setState('offline');
    return;
  }
  if (!session) {
    // No session, e.g. it ended while the app was closed: nothing of its user stays on the device.
    await guarded('Clearing the vault', () => vault.clear());
    setState('signed-out');
    return;
  }
  await guarded('Loading notes', async () => {
    await bindVault(session);
    await renderNotes();
  });
  await guarded('Loading orders', loadOrders);
  setState('signed-in');
}

async function signOut() {
  // Wipe the vault first (everything but `public`): the SDK's logout may navigate away to the
  // provider's end-session page.
  await vault.clear();
  showSignedOut('Signed out.');
  setState('signed-out');
  await client.logout();
}

// ---- service worker ----

async function registerServiceWorker() {
  if (!('serviceWorker' in navigator)) return;
  try {
    // Under `require-trusted-types-for 'script'`, register() takes a TrustedScriptURL; the
    // allow-listed policy `portcullis` here only ever vouches for the one worker URL.
    let url = '/sw.js';
    if (window.trustedTypes && window.trustedTypes.createPolicy) {
      url = swPolicy().createScriptURL('/sw.js');
    }
    await navigator.serviceWorker.register(url, { scope: '/' });
  } catch (err) {
    console.warn(`service worker not registered: ${errorText(err)}`);
  }
}

let policy = null;
function swPolicy() {
  if (!policy) {
    policy = window.trustedTypes.createPolicy('portcullis', {
      createScriptURL(value) {
        if (value === '/sw.js') return value;
        throw new TypeError(`script URL refused: ${value}`);
      },
    });
  }
  return policy;
}

// ---- wiring ----

// The session ended other than by this app's sign-out (idle timeout, revocation, back-channel
// logout): its user's notes go with it.
async function onSessionExpired() {
  showSignedOut('Your session has ended. Sign in again.');
  await guarded('Clearing the vault', () => vault.clear());
  setState('signed-out');
}

function subscribeSessionExpired() {
  // The SDK emits `session-expired` on a 401 (it never retries those).
  if (typeof client.on === 'function') client.on('session-expired', onSessionExpired);
  else if (typeof client.addEventListener === 'function') client.addEventListener('session-expired', onSessionExpired);
  else if (typeof client.onSessionExpired === 'function') client.onSessionExpired(onSessionExpired);
}

async function main() {
  $('login').addEventListener('click', signIn);
  $('handshake-form').addEventListener('submit', (e) => guarded('Sign-in', () => handshake(e)));
  $('logout').addEventListener('click', () => guarded('Sign-out', signOut));
  $('orders-reload').addEventListener('click', () => guarded('Loading orders', loadOrders));
  $('order-form').addEventListener('submit', (e) => guarded('Creating the order', () => createOrder(e)));
  $('note-form').addEventListener('submit', (e) => guarded('Saving the note', () => saveNote(e)));
  $('pref-compact').addEventListener('change', () => guarded('Saving the preference', savePrefs));
  subscribeSessionExpired();

  await guarded('Loading preferences', loadPrefs);
  await afterSignIn().catch((err) => {
    message(`Checking the session failed: ${errorText(err)}`, 'error');
    showSignedOut();
    setState('signed-out');
  });
  registerServiceWorker();
}

main();
