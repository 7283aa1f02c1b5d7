// Independent OpenID provider used by the Nexus integration tests.
//
// Runs `oidc-provider` (an OpenID Certified implementation) on 127.0.0.1 on a
// free port and prints exactly one line to stdout:
//
//   READY {"issuer":"http://127.0.0.1:<port>","port":<port>}
//
// Everything else (logs, library notices) goes to stderr. The process exits
// when stdin closes (so a killed parent never leaves it orphaned) and on
// SIGTERM/SIGINT.
//
// Environment:
//   CLIENTS               JSON array of client metadata (default: one client
//                         `nexus-test` / `nexus-test-secret`).
//   ACCESS_TOKEN_TTL      access token lifetime in seconds (default 3600).
//   ROTATE_REFRESH_TOKEN  "1" rotates refresh tokens on every use; anything
//                         else never rotates.
//   EXTRA_SCOPES          space separated scopes supported in addition to
//                         openid, email, profile, offline_access and any scope
//                         listed in a client's `scope` metadata.
//
// Test control endpoints (plain JSON, handled before the provider sees the
// request):
//   GET  /__test/stats                        request counters
//   POST /__test/reset                        zero the counters, clear injections
//   POST /__test/revoke-all-access-tokens     forget every issued access token
//   POST /__test/revoke-all-refresh-tokens    forget every issued refresh token
//   POST /__test/fail-token-endpoint          {"status":503,"count":2[,"error":"..."]}
//   POST /__test/delay-token-endpoint         {"ms":500,"count":1}

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

// The library prints some notices with console.info/console.log; stdout is
// reserved for the single READY line.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);

const log = (...args) => console.error('[oidc-fixture]', ...args);

// ---------------------------------------------------------------------------
// configuration from the environment

function envInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number.parseInt(raw, 10);
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  }
  return value;
}

const DEFAULT_CLIENT = {
  client_id: 'nexus-test',
  client_secret: 'nexus-test-secret',
  redirect_uris: ['http://127.0.0.1:1/auth/callback'],
  token_endpoint_auth_method: 'client_secret_post',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
};

function loadClients() {
  const raw = process.env.CLIENTS;
  if (raw === undefined || raw.trim() === '') return [DEFAULT_CLIENT];
  const parsed = JSON.parse(raw);
  if (!Array.isArray(parsed)) throw new Error('CLIENTS must be a JSON array');
  return parsed.map((client) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    ...client,
  }));
}

const clients = loadClients();
const accessTokenTtl = envInt('ACCESS_TOKEN_TTL', 3600);
const rotateRefreshToken = process.env.ROTATE_REFRESH_TOKEN === '1';

const scopes = new Set(['openid', 'email', 'profile', 'offline_access']);
for (const scope of (process.env.EXTRA_SCOPES ?? '').split(/\s+/)) {
  if (scope) scopes.add(scope);
}
for (const client of clients) {
  if (typeof client.scope === 'string') {
    for (const scope of client.scope.split(/\s+/)) {
      if (scope) scopes.add(scope);
    }
  }
}

// ---------------------------------------------------------------------------
// in-memory adapter that the control endpoints can reach into

const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

// model name -> Map(id -> { payload, expiresAt })
const stores = new Map();

function storeFor(model) {
  let store = stores.get(model);
  if (!store) {
    store = new Map();
    stores.set(model, store);
  }
  return store;
}

function live(store, id) {
  const entry = store.get(id);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    store.delete(id);
    return undefined;
  }
  return entry.payload;
}

class TestAdapter {
  constructor(model) {
    this.model = model;
    this.store = storeFor(model);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    this.store.set(id, { payload, expiresAt });
  }

  async find(id) {
    return live(this.store, id);
  }

  async findByUid(uid) {
    for (const [id, entry] of this.store) {
      if (entry.payload.uid === uid) return live(this.store, id);
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [id, entry] of this.store) {
      if (entry.payload.userCode === userCode) return live(this.store, id);
    }
    return undefined;
  }

  async consume(id) {
    const payload = live(this.store, id);
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    this.store.delete(id);
  }

  async revokeByGrantId(grantId) {
    for (const model of GRANTABLE) {
      const store = storeFor(model);
      for (const [id, entry] of store) {
        if (entry.payload.grantId === grantId) store.delete(id);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// test control state

const stats = {
  token_requests: 0,
  refresh_requests: 0,
  authorization_code_requests: 0,
  userinfo_requests: 0,
  revocation_requests: 0,
  client_credentials_requests: 0,
  jwks_requests: 0,
};

// queued injections for the token endpoint
let failures = { remaining: 0, status: 503, error: undefined };
let delays = { remaining: 0, ms: 0 };

function resetControls() {
  for (const key of Object.keys(stats)) stats[key] = 0;
  failures = { remaining: 0, status: 503, error: undefined };
  delays = { remaining: 0, ms: 0 };
}

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

async function readRaw(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 1024 * 1024) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJsonBody(text) {
  if (text.trim() === '') return {};
  const value = JSON.parse(text);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error('expected a JSON object');
  }
  return value;
}

function nonNegativeInt(value, name, fallback) {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name} must be a non-negative integer`);
  return value;
}

async function handleControl(req, res, pathname) {
  try {
    if (req.method === 'GET' && pathname === '/__test/stats') {
      return sendJson(res, 200, stats);
    }
    if (req.method !== 'POST') {
      return sendJson(res, 405, { error: 'method_not_allowed' });
    }
    const body = parseJsonBody(await readRaw(req));
    switch (pathname) {
      case '/__test/reset':
        resetControls();
        return sendJson(res, 200, { ok: true });
      case '/__test/revoke-all-access-tokens': {
        const store = storeFor('AccessToken');
        const revoked = store.size;
        store.clear();
        return sendJson(res, 200, { ok: true, revoked });
      }
      case '/__test/revoke-all-refresh-tokens': {
        const store = storeFor('RefreshToken');
        const revoked = store.size;
        store.clear();
        return sendJson(res, 200, { ok: true, revoked });
      }
      case '/__test/fail-token-endpoint': {
        const status = nonNegativeInt(body.status, 'status', 503);
        if (status < 400 || status > 599) throw new Error('status must be 4xx or 5xx');
        if (body.error !== undefined && typeof body.error !== 'string') throw new Error('error must be a string');
        failures = {
          remaining: nonNegativeInt(body.count, 'count', 1),
          status,
          error: body.error,
        };
        return sendJson(res, 200, { ok: true });
      }
      case '/__test/rotate-keys': {
        // A new signing key (and only it) from now on; grants, sessions
        // and tokens live in the shared stores and survive the swap.
        keyGeneration += 1;
        const kid = `fixture-rs256-${keyGeneration}`;
        providerCallback = buildProvider(currentIssuer, kid).callback();
        return sendJson(res, 200, { ok: true, kid });
      }
      case '/__test/delay-token-endpoint':
        delays = {
          remaining: nonNegativeInt(body.count, 'count', 1),
          ms: nonNegativeInt(body.ms, 'ms', 0),
        };
        return sendJson(res, 200, { ok: true });
      default:
        return sendJson(res, 404, { error: 'not_found' });
    }
  } catch (err) {
    return sendJson(res, 400, { error: 'bad_request', error_description: String(err?.message ?? err) });
  }
}

// Token endpoint: count by grant_type, then apply queued delays/failures.
// Returns true when the request was answered here.
async function interceptToken(req, res) {
  const raw = await readRaw(req);
  // The provider falls back to `req.body` when the stream was already read.
  req.body = raw;
  const grantType = new URLSearchParams(raw).get('grant_type');
  stats.token_requests += 1;
  if (grantType === 'refresh_token') stats.refresh_requests += 1;
  if (grantType === 'authorization_code') stats.authorization_code_requests += 1;
  if (grantType === 'client_credentials') stats.client_credentials_requests += 1;

  if (delays.remaining > 0) {
    delays.remaining -= 1;
    const { ms } = delays;
    log(`delaying token response by ${ms}ms`);
    await new Promise((resolve) => { setTimeout(resolve, ms); });
  }
  if (failures.remaining > 0) {
    failures.remaining -= 1;
    const { status } = failures;
    const error = failures.error ?? (status >= 500 ? 'server_error' : 'invalid_request');
    log(`injected token endpoint failure ${status} ${error}`);
    sendJson(res, status, { error, error_description: 'failure injected by the test fixture' });
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// provider

function claimsFor(login) {
  return {
    sub: login,
    email: `${login}@example.test`,
    email_verified: true,
    name: login,
    preferred_username: login,
  };
}

function buildProvider(issuer, kid = 'fixture-rs256') {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };

  const provider = new Provider(issuer, {
    adapter: TestAdapter,
    clients,
    jwks: { keys: [jwk] },
    scopes: [...scopes],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    cookies: {
      keys: [crypto.randomBytes(32).toString('base64url')],
      long: { httpOnly: true, sameSite: 'lax', secure: false },
      short: { httpOnly: true, sameSite: 'lax', secure: false },
    },
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      // Grants without a browser (SPEC 11): clients that list the grant
      // get an access token for their own scopes.
      clientCredentials: { enabled: true },
    },
    pkce: {
      required: () => true,
    },
    // Always hand out a refresh token to clients allowed to use the grant,
    // with or without offline_access.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken,
    // Tokens never die with the (fixture) browser session.
    expiresWithSession: async () => false,
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => claimsFor(sub),
    }),
    ttl: {
      AccessToken: accessTokenTtl,
      ClientCredentials: accessTokenTtl,
      AuthorizationCode: 120,
      IdToken: 3600,
      RefreshToken: 14 * 24 * 60 * 60,
      Interaction: 3600,
      Session: 24 * 60 * 60,
      Grant: 14 * 24 * 60 * 60,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      const items = Object.entries(out)
        .map(([k, v]) => `<pre><strong>${k}</strong>: ${String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)}</pre>`)
        .join('');
      ctx.body = `<!DOCTYPE html><html><head><title>oops! something went wrong</title></head><body><h1>oops! something went wrong</h1>${items}</body></html>`;
    },
  });

  provider.on('server_error', (_ctx, err) => log('server_error', err));
  provider.on('grant.error', (_ctx, err) => log('grant.error', err?.message, err?.error_description ?? ''));
  return provider;
}

// ---------------------------------------------------------------------------
// server

let providerCallback;
let currentIssuer;
let keyGeneration = 0;

const server = http.createServer(async (req, res) => {
  const started = Date.now();
  res.on('finish', () => {
    log(`${req.method} ${req.url} -> ${res.statusCode} (${Date.now() - started}ms)`);
  });
  try {
    const { pathname } = new URL(req.url, 'http://127.0.0.1');
    if (pathname.startsWith('/__test/')) {
      await handleControl(req, res, pathname);
      return;
    }
    if (pathname === '/me') stats.userinfo_requests += 1;
    if (pathname === '/jwks') stats.jwks_requests += 1;
    if (pathname === '/token/revocation') stats.revocation_requests += 1;
    if (req.method === 'POST' && pathname === '/token') {
      if (await interceptToken(req, res)) return;
    }
    providerCallback(req, res);
  } catch (err) {
    log('wrapper error', err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err?.message ?? err) });
    else res.destroy();
  }
});

let shuttingDown = false;
function shutdown(reason, code = 0) {
  if (shuttingDown) return;
  shuttingDown = true;
  log(`shutting down: ${reason}`);
  server.closeAllConnections?.();
  server.close(() => process.exit(code));
  setTimeout(() => process.exit(code), 1000).unref();
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
process.stdin.on('end', () => shutdown('stdin closed'));
process.stdin.on('close', () => shutdown('stdin closed'));
process.stdin.on('error', () => shutdown('stdin error'));
process.stdin.resume();

server.on('error', (err) => {
  log('server error', err);
  process.exit(1);
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  try {
    currentIssuer = issuer;
    const provider = buildProvider(issuer);
    providerCallback = provider.callback();
  } catch (err) {
    log('failed to configure the provider', err);
    process.exit(1);
  }
  process.stdout.write(`READY ${JSON.stringify({ issuer, port })}\n`);
});
