// OpenID Provider fixture for the Portcullis integration tests.
//
// oidc-provider (panva) 9.13.3 on 127.0.0.1, one confidential client, one test
// user who signs in through a real HTML login form (or, when IDP_PASSWORD_GRANT=1,
// with the resource owner password grant at the token endpoint), and a few
// test-only endpoints under /_test/ (counters, back-channel logout trigger).
//
// NOT FOR PRODUCTION: in-memory adapter, ephemeral keys, test credentials.
// See ../README.md for the environment variables and the behaviour.

import { randomBytes, generateKeyPairSync, timingSafeEqual, createHash } from 'node:crypto';
import http from 'node:http';
import * as querystring from 'node:querystring';

import Provider, { errors } from 'oidc-provider';
// Internals, for POST /_test/rotate-keys only (oidc-provider has no key rotation API).
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
import initializeKeystore from 'oidc-provider/lib/helpers/initialize_keystore.js';

// ---------------------------------------------------------------------------
// Environment

function list(value) {
  return (value || '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function positiveInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) {
    fail(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  }
  return n;
}

function fail(message) {
  console.error(`idp: ${message}`);
  process.exit(2);
}

const HOST = '127.0.0.1';
const PORT = process.env.IDP_PORT ? Number(process.env.IDP_PORT) : 0;
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) fail('IDP_PORT must be a port number');

const CLIENT_ID = process.env.IDP_CLIENT_ID || 'portcullis';
const CLIENT_SECRET = process.env.IDP_CLIENT_SECRET || 'portcullis-secret';
const REDIRECT_URIS = list(process.env.IDP_REDIRECT_URIS);
if (REDIRECT_URIS.length === 0) fail('IDP_REDIRECT_URIS is required (comma-separated redirect URIs)');
const POST_LOGOUT_REDIRECT_URIS = list(process.env.IDP_POST_LOGOUT_REDIRECT_URIS);
const BACKCHANNEL_LOGOUT_URI = process.env.IDP_BACKCHANNEL_LOGOUT_URI || undefined;
const ACCESS_TOKEN_TTL = positiveInt('IDP_ACCESS_TOKEN_TTL', 3600);
const ID_TOKEN_TTL = 3600;
// RFC 6749 4.3 (deprecated by RFC 9700): off unless IDP_PASSWORD_GRANT=1.
const PASSWORD_GRANT = process.env.IDP_PASSWORD_GRANT === '1';
// oidc-provider's default refresh-token policy (offline_access granted, which needs
// prompt=consent) instead of "whenever the client may refresh": IDP_STOCK_REFRESH_POLICY=1.
const STOCK_REFRESH_POLICY = process.env.IDP_STOCK_REFRESH_POLICY === '1';
const SCOPES = ['openid', 'offline_access', 'profile', 'email'];

// Interoperability variants (README "Provider variants"); unset, the fixture is as described above.
// The client's registered token endpoint authentication, and what discovery advertises.
const TOKEN_ENDPOINT_AUTH_METHOD = process.env.IDP_TOKEN_ENDPOINT_AUTH_METHOD || 'client_secret_basic';
const CLIENT_AUTH_METHODS = list(process.env.IDP_CLIENT_AUTH_METHODS);
// The ID token signing algorithm (and the type of the signing key).
const ID_TOKEN_ALG = process.env.IDP_ID_TOKEN_ALG || 'RS256';
// An issuer with a path (`/realms/x`): every endpoint is served under it.
const ISSUER_PATH = process.env.IDP_ISSUER_PATH || '';
if (ISSUER_PATH && !/^(\/[\w.~-]+)+$/.test(ISSUER_PATH)) fail('IDP_ISSUER_PATH must look like /a/b (no trailing slash)');
// More keys in the JWKS than the one that signs; the signing key without `alg`.
const EXTRA_KEYS = process.env.IDP_EXTRA_KEYS === '1';
const KEY_WITHOUT_ALG = process.env.IDP_KEY_WITHOUT_ALG === '1';
// Leave RFC 7009 revocation / RP-initiated logout out of the provider (and its discovery).
const REVOCATION = process.env.IDP_NO_REVOCATION !== '1';
const END_SESSION = process.env.IDP_NO_END_SESSION !== '1';
// oidc-provider's own default (OIDC Core §5.4): with an access token issued, the scope's claims
// (name, email) are only in the UserInfo answer, not in the ID token.
const CLAIMS_ONLY_IN_USERINFO = process.env.IDP_CLAIMS_ONLY_IN_USERINFO === '1';
const REFRESH_TOKEN_TTL = 24 * 60 * 60;

const USER = process.env.IDP_USER || 'alice';
const PASSWORD = process.env.IDP_PASSWORD || 'wonderland';
const ACCOUNT = {
  sub: USER,
  name: process.env.IDP_USER_NAME || (USER === 'alice' ? 'Alice Liddell' : USER),
  email: process.env.IDP_USER_EMAIL || `${USER}@example.test`,
  email_verified: true,
};

// ---------------------------------------------------------------------------
// Counters for GET /_test/stats (reset with POST /_test/reset-stats)

function freshStats() {
  return {
    // token endpoint requests by grant_type (successful or not)
    token_requests: {},
    // token endpoint error responses by OAuth error code
    token_errors: {},
    // invalid_grant answers to grant_type=refresh_token
    refresh_invalid_grant: 0,
    // successful (200) requests to the revocation endpoint
    revocations: 0,
    // of those: how many found a refresh token / an access token to revoke
    revoked_refresh_tokens: 0,
    revoked_access_tokens: 0,
    // grants revoked for any reason (revocation, refresh token reuse, logout)
    grants_revoked: 0,
    introspections: 0,
    userinfo_requests: 0,
    // authorization endpoint requests (GET/POST /auth, not the resume)
    authorization_requests: 0,
    // RP-initiated logouts completed at the end_session endpoint
    end_sessions: 0,
    // back-channel logout tokens delivered / failed
    backchannel_logouts: 0,
    backchannel_logout_errors: 0,
    // login form submissions
    logins: 0,
    failed_logins: 0,
    // grant_type=password: tokens issued / refused for wrong credentials
    password_grants: 0,
    failed_password_grants: 0,
    // W3C trace context seen on requests to the provider's own endpoints (the last 200):
    // { method, path, traceparent } for every request that carried a traceparent header
    traceparents: [],
  };
}
let stats = freshStats();
// Every token string the token endpoint handed out (GET /_test/issued-tokens), so leakage
// tests can scan responses, logs and store dumps for them. Never reset.
const issuedTokens = [];

function bump(map, key) {
  map[key] = (map[key] || 0) + 1;
}

// sub -> Set of sids for which an authorization code (or a password grant's
// tokens) was issued, so that
// POST /_test/backchannel-logout can log a user out of every session.
const sidsBySub = new Map();

// ---------------------------------------------------------------------------
// Provider configuration

// The key type each ID token algorithm needs.
function keyPairFor(alg) {
  if (/^(RS|PS)(256|384|512)$/.test(alg)) return generateKeyPairSync('rsa', { modulusLength: 2048 });
  const curve = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' }[alg];
  if (curve) return generateKeyPairSync('ec', { namedCurve: curve });
  if (alg === 'EdDSA' || alg === 'Ed25519') return generateKeyPairSync('ed25519');
  return fail(`IDP_ID_TOKEN_ALG ${JSON.stringify(alg)} is not supported by the fixture`);
}

function newSigningJwk(alg) {
  const { privateKey } = keyPairFor(alg);
  const jwk = {
    ...privateKey.export({ format: 'jwk' }),
    use: 'sig',
    alg,
    kid: `testkit-${randomBytes(6).toString('base64url')}`,
  };
  if (KEY_WITHOUT_ALG) delete jwk.alg;
  return jwk;
}

// Published after the signing key with IDP_EXTRA_KEYS=1: another RSA key (no `alg`), an ES256
// and an ES512 (P-521) key, never used to sign (oidc-provider signs with the first key that fits
// the algorithm).
function extraJwks() {
  if (!EXTRA_KEYS) return [];
  const jwk = (type, options) => generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' });
  return [
    { ...jwk('rsa', { modulusLength: 2048 }), use: 'sig', kid: 'testkit-extra-rsa' },
    { ...jwk('ec', { namedCurve: 'P-256' }), use: 'sig', alg: 'ES256', kid: 'testkit-extra-es256' },
    { ...jwk('ec', { namedCurve: 'P-521' }), use: 'sig', alg: 'ES512', kid: 'testkit-extra-es512' },
  ];
}

let signingJwk = newSigningJwk(ID_TOKEN_ALG);
const otherJwks = extraJwks();

const client = {
  client_id: CLIENT_ID,
  client_secret: CLIENT_SECRET,
  redirect_uris: REDIRECT_URIS,
  post_logout_redirect_uris: POST_LOGOUT_REDIRECT_URIS,
  grant_types: ['authorization_code', 'refresh_token', ...(PASSWORD_GRANT ? ['password'] : [])],
  response_types: ['code'],
  token_endpoint_auth_method: TOKEN_ENDPOINT_AUTH_METHOD,
};
if (ID_TOKEN_ALG !== 'RS256') client.id_token_signed_response_alg = ID_TOKEN_ALG;
if (BACKCHANNEL_LOGOUT_URI) {
  client.backchannel_logout_uri = BACKCHANNEL_LOGOUT_URI;
  client.backchannel_logout_session_required = true;
}

function isLoopbackUrl(url) {
  try {
    const { hostname } = new URL(url);
    return hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]'
      || hostname.endsWith('.localhost') || /^127\.\d+\.\d+\.\d+$/.test(hostname);
  } catch {
    return false;
  }
}

async function findAccount(ctx, id) {
  if (id !== ACCOUNT.sub) return undefined;
  return {
    accountId: id,
    async claims() {
      return { ...ACCOUNT };
    },
  };
}

function configuration() {
  return {
    clients: [client],
    findAccount,
    claims: {
      openid: ['sub', 'sid'],
      profile: ['name'],
      email: ['email', 'email_verified'],
    },
    scopes: SCOPES,
    // Put the scope's claims (name, email) into the ID token too, as most
    // IdPs do; oidc-provider's default only puts them into /me
    // (IDP_CLAIMS_ONLY_IN_USERINFO=1).
    conformIdTokenClaims: CLAIMS_ONLY_IN_USERINFO,
    pkce: {
      required: () => true,
    },
    // A refresh token whenever the client may use the refresh_token grant:
    // offline_access is not needed (unless IDP_STOCK_REFRESH_POLICY=1).
    ...(STOCK_REFRESH_POLICY ? {} : {
      async issueRefreshToken(ctx, rpClient) {
        return rpClient.grantTypeAllowed('refresh_token');
      },
    }),
    rotateRefreshToken: true,
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: REVOCATION },
      introspection: { enabled: true },
      rpInitiatedLogout: {
        enabled: END_SESSION,
        logoutSource,
        postLogoutSuccessSource,
      },
      backchannelLogout: { enabled: true },
    },
    interactions: {
      url(ctx, interaction) {
        return `${ISSUER_PATH}/interaction/${interaction.uid}`;
      },
    },
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
    },
    jwks: { keys: [signingJwk, ...otherJwks] },
    ...(CLIENT_AUTH_METHODS.length ? { clientAuthMethods: CLIENT_AUTH_METHODS } : {}),
    ...(ID_TOKEN_ALG !== 'RS256' ? {
      enabledJWA: { idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'Ed25519', 'EdDSA', ID_TOKEN_ALG].filter((a, i, all) => all.indexOf(a) === i) },
    } : {}),
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      IdToken: ID_TOKEN_TTL,
      RefreshToken: REFRESH_TOKEN_TTL,
      AuthorizationCode: 60,
      Interaction: 600,
      Session: 24 * 60 * 60,
      Grant: 2 * 24 * 60 * 60,
    },
    // oidc-provider refuses to send back-channel logout tokens to special-use
    // addresses (loopback included) since 9.x; every address in this fixture
    // is loopback, so drop that protection for loopback URLs only.
    fetch(url, options) {
      if (isLoopbackUrl(String(url))) {
        const { dispatcher: _ignored, ...rest } = options;
        return globalThis.fetch(url, rest);
      }
      return globalThis.fetch(url, options);
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<h1>Error</h1>
<p id="error">${esc(out.error)}</p>
<p id="error_description">${esc(out.error_description || '')}</p>`);
    },
  };
}

// ---------------------------------------------------------------------------
// HTML

function esc(value) {
  return String(value ?? '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body>
${body}
</body>
</html>
`;
}

function loginPage(uid, { error, login } = {}) {
  return page('Sign in', `<h1>Sign in</h1>
${error ? `<p id="error" role="alert">${esc(error)}</p>\n` : ''}<form id="login" method="post" action="${ISSUER_PATH}/interaction/${esc(uid)}/login">
<label>Username <input type="text" name="login" value="${esc(login || '')}" autocomplete="username" autofocus required></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button>
</form>
<p><a href="${ISSUER_PATH}/interaction/${esc(uid)}/abort">Cancel</a></p>`);
}

async function logoutSource(ctx, form) {
  // `form` is `<form id="op.logoutForm" method="post" action="..."><input
  // type="hidden" name="xsrf" value="..."/></form>`: keep it and add the two
  // submit buttons (the "yes" one sends logout=yes: end the IdP session).
  ctx.type = 'html';
  ctx.body = page('Sign out', `<h1>Sign out from ${esc(ctx.host)}?</h1>
${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes" autofocus>Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = page('Signed out', '<h1 id="signed-out">Signed out</h1>');
}

// ---------------------------------------------------------------------------
// Helpers

const BODY_LIMIT = 64 * 1024;

async function readForm(ctx) {
  // ctx.is() is null for a request without a body, false for another type.
  if (ctx.is('application/x-www-form-urlencoded', 'application/json') === false) {
    ctx.throw(415, 'expected application/x-www-form-urlencoded or application/json');
  }
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > BODY_LIMIT) ctx.throw(413, 'request body too large');
    chunks.push(chunk);
  }
  const raw = Buffer.concat(chunks).toString('utf8');
  if (ctx.is('application/json')) {
    try {
      return raw ? JSON.parse(raw) : {};
    } catch {
      ctx.throw(400, 'invalid JSON');
    }
  }
  return querystring.parse(raw);
}

function first(value) {
  return Array.isArray(value) ? value[0] : value;
}

function safeEqual(a, b) {
  if (typeof a !== 'string' || typeof b !== 'string') return false;
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb) && a === b;
}

async function grantConsent(provider, details) {
  const { prompt, params, session, grantId } = details;
  let grant = grantId ? await provider.Grant.find(grantId) : undefined;
  if (!grant) {
    grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  }
  const d = prompt.details || {};
  if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  if (d.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  return { consent: { grantId: await grant.save() } };
}

async function finish(provider, ctx, result) {
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
    mergeWithLastSubmission: false,
  });
  ctx.status = 303;
  ctx.redirect(returnTo);
}

function json(ctx, status, body) {
  ctx.status = status;
  ctx.type = 'json';
  ctx.body = body;
}

// ---------------------------------------------------------------------------
// grant_type=password (RFC 6749 4.3), registered with
// provider.registerGrantType() when IDP_PASSWORD_GRANT=1. oidc-provider has no
// built-in password grant; this issues what the code flow issues (access token,
// refresh token when the client may refresh, ID token with the scope's claims
// and, for back-channel clients, a sid), with oidc-provider's own models, so
// refresh, revocation, introspection and back-channel logout treat the tokens
// like any others.

const PASSWORD_GRANT_PARAMETERS = ['username', 'password', 'scope'];

async function passwordGrantHandler(ctx) {
  const { provider, client, params } = ctx.oidc;
  const { username, password } = params;
  if (typeof username !== 'string' || username === '' || typeof password !== 'string' || password === '') {
    throw new errors.InvalidRequest('username and password are required');
  }
  // Both comparisons always run (no early exit on the user name), and the
  // answer for an unknown user and for a wrong password is the same.
  const userOk = safeEqual(username, USER);
  const passwordOk = safeEqual(password, PASSWORD);
  if (!(userOk && passwordOk)) {
    stats.failed_password_grants += 1;
    throw new errors.InvalidGrant('invalid resource owner credentials');
  }

  const requested = new Set((typeof params.scope === 'string' ? params.scope : 'openid').split(' ').filter(Boolean));
  const unknown = [...requested].filter((s) => !SCOPES.includes(s)
    || (client.scope && !client.scope.split(' ').includes(s)));
  if (unknown.length !== 0) {
    throw new errors.InvalidScope('requested scope is not allowed', unknown.join(' '));
  }

  const account = await findAccount(ctx, ACCOUNT.sub);
  ctx.oidc.entity('Account', account);
  const grant = new provider.Grant({ accountId: account.accountId, clientId: client.clientId });
  grant.addOIDCScope([...requested].join(' '));
  const grantId = await grant.save();
  ctx.oidc.entity('Grant', grant);

  const authTime = Math.floor(Date.now() / 1000);
  // A back-channel client gets a sid, as after a code flow login.
  const sid = client.includeSid() ? randomBytes(16).toString('base64url') : undefined;
  if (sid) {
    if (!sidsBySub.has(account.accountId)) sidsBySub.set(account.accountId, new Set());
    sidsBySub.get(account.accountId).add(sid);
  }
  const scope = grant.getOIDCScopeFiltered(requested);

  const at = new provider.AccessToken({
    accountId: account.accountId,
    client,
    grantId,
    gty: 'password',
    sid,
  });
  at.scope = scope;
  ctx.oidc.entity('AccessToken', at);
  const accessToken = await at.save();

  let refreshToken;
  if (client.grantTypeAllowed('refresh_token')) {
    const rt = new provider.RefreshToken({
      accountId: account.accountId,
      authTime,
      client,
      grantId,
      gty: 'password',
      rotations: 0,
      scope,
      sid,
    });
    ctx.oidc.entity('RefreshToken', rt);
    refreshToken = await rt.save();
  }

  let idToken;
  if (requested.has('openid')) {
    const claims = await account.claims('id_token', scope, {}, []);
    const token = new provider.IdToken({ ...claims, sub: account.accountId, auth_time: authTime }, { ctx });
    token.scope = scope;
    token.mask = {};
    token.rejected = [];
    if (sid) token.set('sid', sid);
    idToken = await token.issue({ use: 'idtoken' });
  }

  stats.password_grants += 1;
  ctx.body = Object.fromEntries(Object.entries({
    access_token: accessToken,
    expires_in: at.expiration,
    id_token: idToken,
    refresh_token: refreshToken,
    scope,
    token_type: at.tokenType,
  }).filter(([, v]) => v !== undefined));
}

// ---------------------------------------------------------------------------
// Koa middleware in front of oidc-provider's own routes

function interactionRoutes(provider) {
  return async (ctx, next) => {
    const m = /^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/.exec(ctx.path);
    if (!m) return next();
    const [, uid, action] = m;
    ctx.set('cache-control', 'no-store');

    let details;
    try {
      details = await provider.interactionDetails(ctx.req, ctx.res);
    } catch (err) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = page('Error', `<h1>Error</h1><p id="error">${esc(err.message)}</p>`);
      console.error(`interaction ${uid}: ${err.message}`);
      return undefined;
    }
    if (details.uid !== uid) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = page('Error', '<h1>Error</h1><p id="error">interaction mismatch</p>');
      return undefined;
    }
    const { prompt } = details;

    if (action === 'abort' && ctx.method === 'GET') {
      return finish(provider, ctx, {
        error: 'access_denied',
        error_description: 'End-User aborted interaction',
      });
    }

    if (prompt.name === 'login') {
      if (!action && ctx.method === 'GET') {
        ctx.type = 'html';
        ctx.body = loginPage(uid);
        return undefined;
      }
      if (action === 'login' && ctx.method === 'POST') {
        const form = await readForm(ctx);
        const login = first(form.login);
        const password = first(form.password);
        // Evaluate both comparisons: no early exit on the user name.
        const userOk = safeEqual(login, USER);
        const passwordOk = safeEqual(password, PASSWORD);
        if (!(userOk && passwordOk)) {
          stats.failed_logins += 1;
          ctx.status = 401;
          ctx.type = 'html';
          ctx.body = loginPage(uid, { error: 'Invalid username or password.', login });
          return undefined;
        }
        stats.logins += 1;
        return finish(provider, ctx, { login: { accountId: ACCOUNT.sub } });
      }
    } else if (prompt.name === 'consent') {
      // Consent is granted automatically, on GET of the interaction page or
      // on POST /interaction/:uid/confirm.
      if ((!action && ctx.method === 'GET') || (action === 'confirm' && ctx.method === 'POST')) {
        if (ctx.method === 'POST') await readForm(ctx);
        return finish(provider, ctx, await grantConsent(provider, details));
      }
    } else {
      return finish(provider, ctx, {
        error: 'access_denied',
        error_description: `unsupported prompt ${prompt.name}`,
      });
    }

    ctx.status = 405;
    ctx.type = 'html';
    ctx.body = page('Error', `<h1>Error</h1><p id="error">${esc(ctx.method)} not allowed here for prompt ${esc(prompt.name)}</p>`);
    return undefined;
  };
}

function testRoutes(provider) {
  return async (ctx, next) => {
    if (!ctx.path.startsWith('/_test/')) {
      const traceparent = ctx.get('traceparent');
      if (traceparent) {
        stats.traceparents.push({ method: ctx.method, path: ctx.path, traceparent });
        if (stats.traceparents.length > 200) stats.traceparents.shift();
      }
      return next();
    }
    ctx.set('cache-control', 'no-store');

    if (ctx.path === '/_test/stats' && ctx.method === 'GET') {
      return json(ctx, 200, stats);
    }
    if (ctx.path === '/_test/issued-tokens' && ctx.method === 'GET') {
      return json(ctx, 200, { tokens: issuedTokens });
    }
    if (ctx.path === '/_test/reset-stats' && ctx.method === 'POST') {
      stats = freshStats();
      ctx.status = 204;
      return undefined;
    }
    if (ctx.path === '/_test/rotate-keys' && ctx.method === 'POST') {
      // Key rotation: a new signing key (same algorithm, new kid) signs from now on; the old one
      // stays published unless `retire=1` (form or JSON). Answers the new key set.
      const form = await readForm(ctx);
      const retire = first(form.retire) === '1';
      const previous = signingJwk;
      signingJwk = newSigningJwk(ID_TOKEN_ALG);
      initializeKeystore.call(provider, { keys: [signingJwk, ...(retire ? [] : [previous]), ...otherJwks] });
      return json(ctx, 200, instance(provider).jwks);
    }
    if (ctx.path === '/_test/backchannel-logout' && ctx.method === 'POST') {
      // Deliver back-channel logout tokens to the client's registered
      // backchannel_logout_uri, as the IdP would when the user's session ends
      // there. Body (form or JSON): sub (default: the test user), sid
      // (optional; default: every sid issued to sub so far).
      const rp = await provider.Client.find(CLIENT_ID);
      if (!rp?.backchannelLogoutUri) {
        return json(ctx, 409, { error: 'no backchannel_logout_uri registered (set IDP_BACKCHANNEL_LOGOUT_URI)' });
      }
      const form = await readForm(ctx);
      const sub = first(form.sub) || ACCOUNT.sub;
      const sids = form.sid ? [first(form.sid)] : [...(sidsBySub.get(sub) || [])];
      if (sids.length === 0) sids.push(undefined);
      const results = [];
      for (const sid of sids) {
        try {
          await rp.backchannelLogout(sub, sid);
          stats.backchannel_logouts += 1;
          results.push({ sid: sid ?? null, delivered: true });
        } catch (err) {
          stats.backchannel_logout_errors += 1;
          console.error(`backchannel logout to ${rp.backchannelLogoutUri} failed: ${err.message}`);
          results.push({ sid: sid ?? null, delivered: false, error: err.message });
        }
      }
      return json(ctx, results.every((r) => r.delivered) ? 200 : 502, { sub, results });
    }
    return json(ctx, 404, { error: 'not_found' });
  };
}

// Errors thrown by the fixture's own middleware (oidc-provider's routes have
// their own handler): log them, answer with a small JSON error.
function errorsToStderr() {
  return async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      const status = err.status || err.statusCode || 500;
      if (status >= 500) {
        console.error(`fixture error on ${ctx.method} ${ctx.path}:`, err);
      } else {
        console.error(`fixture error on ${ctx.method} ${ctx.path}: ${status} ${err.message}`);
      }
      ctx.status = status;
      ctx.type = 'json';
      ctx.body = { error: status >= 500 ? 'server_error' : 'invalid_request', error_description: err.expose ? err.message : undefined };
    }
  };
}

// Counts requests per oidc-provider route once they have been answered.
function counters() {
  return async (ctx, next) => {
    try {
      await next();
    } finally {
      let route;
      try {
        route = ctx.oidc?.route;
      } catch {
        route = undefined;
      }
      if (route === 'token') {
        let grantType;
        try {
          grantType = first(ctx.oidc.params?.grant_type) ?? first(ctx.oidc.body?.grant_type);
        } catch {
          grantType = undefined;
        }
        grantType = typeof grantType === 'string' ? grantType : 'unknown';
        bump(stats.token_requests, grantType);
        if (ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
          for (const k of ['access_token', 'refresh_token', 'id_token']) {
            if (typeof ctx.body[k] === 'string') issuedTokens.push(ctx.body[k]);
          }
        }
        const error = ctx.status >= 400 && ctx.body && typeof ctx.body === 'object' ? ctx.body.error : undefined;
        if (error) {
          bump(stats.token_errors, error);
          if (grantType === 'refresh_token' && error === 'invalid_grant') stats.refresh_invalid_grant += 1;
        }
      } else if (route === 'revocation' && ctx.status === 200) {
        stats.revocations += 1;
        const entities = ctx.oidc.entities || {};
        if (entities.RefreshToken) stats.revoked_refresh_tokens += 1;
        if (entities.AccessToken) stats.revoked_access_tokens += 1;
      } else if (route === 'introspection') {
        stats.introspections += 1;
      } else if (route === 'userinfo') {
        stats.userinfo_requests += 1;
      } else if (route === 'authorization') {
        stats.authorization_requests += 1;
      }
    }
  };
}

// ---------------------------------------------------------------------------
// Start: listen first (port 0 = any free port), then build the provider with
// the issuer that contains the actual port.

const server = http.createServer((req, res) => {
  res.statusCode = 503;
  res.end('starting');
});

server.on('error', (err) => fail(`listen failed: ${err.message}`));

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  const issuer = `http://${HOST}:${port}${ISSUER_PATH}`;
  const provider = new Provider(issuer, configuration());
  // The fixture runs on plain http on loopback: no proxy in front of it.
  provider.proxy = false;
  if (PASSWORD_GRANT) {
    provider.registerGrantType('password', passwordGrantHandler, PASSWORD_GRANT_PARAMETERS);
  }

  provider.use(errorsToStderr());
  provider.use(testRoutes(provider));
  provider.use(counters());
  provider.use(interactionRoutes(provider));

  provider.on('authorization_code.saved', (code) => {
    if (code.sid && code.accountId) {
      if (!sidsBySub.has(code.accountId)) sidsBySub.set(code.accountId, new Set());
      sidsBySub.get(code.accountId).add(code.sid);
    }
  });
  provider.on('grant.revoked', () => {
    stats.grants_revoked += 1;
  });
  provider.on('end_session.success', () => {
    stats.end_sessions += 1;
  });
  provider.on('backchannel.success', () => {
    stats.backchannel_logouts += 1;
  });
  provider.on('backchannel.error', (ctx, err, rp) => {
    stats.backchannel_logout_errors += 1;
    console.error(`backchannel.error ${rp?.backchannelLogoutUri}: ${err.message}`);
  });

  // Errors, never tokens: messages and OAuth error codes only.
  const describe = (ctx, err) => `${ctx?.method ?? ''} ${ctx?.path ?? ''}: ${err.error || err.name}: ${err.error_description || err.message}${err.error_detail ? ` (${err.error_detail})` : ''}`;
  for (const event of [
    'authorization.error',
    'grant.error',
    'revocation.error',
    'introspection.error',
    'userinfo.error',
    'end_session.error',
    'end_session_confirm.error',
    'discovery.error',
    'jwks.error',
  ]) {
    provider.on(event, (ctx, err) => console.error(`${event} ${describe(ctx, err)}`));
  }
  provider.on('server_error', (ctx, err) => console.error(`server_error ${ctx?.method} ${ctx?.path}`, err));

  server.removeAllListeners('request');
  const handle = provider.callback();
  server.on('request', ISSUER_PATH ? mountedAt(ISSUER_PATH, handle) : handle);

  console.error(`listening on ${issuer} client_id=${CLIENT_ID} redirect_uris=${REDIRECT_URIS.join(' ')}${PASSWORD_GRANT ? ' password_grant=on' : ''}`);
  // The one line on stdout: the Rust side waits for it.
  process.stdout.write(`IDP_READY ${issuer}\n`);
});

// Serves `handle` under `prefix` as Express's app.use(prefix, …) would (oidc-provider builds its
// URLs from `req.originalUrl`); anything outside the prefix is a 404.
function mountedAt(prefix, handle) {
  return (req, res) => {
    const url = req.url || '/';
    const rest = url.slice(prefix.length);
    if (!url.startsWith(prefix) || !(rest === '' || rest.startsWith('/') || rest.startsWith('?'))) {
      res.statusCode = 404;
      res.end();
      return;
    }
    req.originalUrl = url;
    req.url = rest.startsWith('/') ? rest : `/${rest}`;
    handle(req, res);
  };
}

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 1000).unref();
}

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, shutdown);
}

// When started by the Rust testkit (IDP_EXIT_ON_STDIN_CLOSE=1) stdin is a pipe
// held by the test process: exit as soon as it closes, so the IdP dies with
// the test even when the test process is killed.
if (process.env.IDP_EXIT_ON_STDIN_CLOSE === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
