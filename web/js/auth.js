// Who the user is: a Bearer token from the dev issuer (local) or from a real
// OIDC provider through Authorization Code + PKCE (when configured). With the
// provider, the refresh token it hands out keeps a shift going without a new
// sign-in: the access token is renewed before it expires, and the provider's
// rotated refresh token replaces the old one each time.

const TOKEN_KEY = 'tb.token';
const PKCE_KEY = 'tb.pkce';
const REFRESH_KEY = 'tb.refresh';
// Renew this long before the access token expires.
const REFRESH_MARGIN_MS = 60000;

let token = localStorage.getItem(TOKEN_KEY);
let config = null;

function b64urlDecode(part) {
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
  const pad = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
  const bin = atob(pad);
  return new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
}

function b64urlEncode(bytes) {
  let bin = '';
  for (const b of new Uint8Array(bytes)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The claims of a JWT, without verifying it (the API verifies). */
export function jwtClaims(jwt) {
  try {
    return JSON.parse(b64urlDecode(String(jwt).split('.')[1]));
  } catch {
    return null;
  }
}

function rolesOf(claims) {
  if (!claims) return [];
  const roles = new Set([].concat(claims.roles || [], claims.realm_access?.roles || []));
  for (const scope of String(claims.scope || '').split(' ')) if (scope.startsWith('role:')) roles.add(scope.slice(5));
  return [...roles];
}

function emit() {
  window.dispatchEvent(new CustomEvent('tb:auth', { detail: currentUser() }));
}

/** {sub, roles, exp} or null when signed out or the token expired. */
export function currentUser() {
  if (!token) return null;
  const claims = jwtClaims(token);
  if (!claims || !claims.sub) return null;
  return { sub: claims.sub, name: claims.name || claims.preferred_username || claims.sub, roles: rolesOf(claims), exp: claims.exp || 0 };
}

/** True when the token is missing or past its expiry (with a small margin). */
export function tokenExpired() {
  const user = currentUser();
  return !user || (user.exp && user.exp * 1000 < Date.now() + 5000);
}

export function getToken() {
  return token;
}

export function setToken(value) {
  token = value || null;
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
  scheduleRefresh();
  emit();
}

// Renew ahead of expiry too, so a live WebSocket or an idle scanner never holds a
// dead token (requests also renew on their own, see freshToken).
let refreshTimer = null;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const exp = currentUser()?.exp;
  if (!exp || !canRefresh()) return;
  const wait = Math.max(5000, exp * 1000 - Date.now() - REFRESH_MARGIN_MS);
  refreshTimer = setTimeout(() => refreshSession(), Math.min(wait, 2 ** 31 - 1));
}

export function logout() {
  localStorage.removeItem(REFRESH_KEY);
  setToken(null);
}

function savedRefresh() {
  try {
    return JSON.parse(localStorage.getItem(REFRESH_KEY) || 'null');
  } catch {
    return null;
  }
}

function keepRefresh(body, tokenEndpoint, clientId) {
  if (body.refresh_token) {
    localStorage.setItem(REFRESH_KEY, JSON.stringify({ token: body.refresh_token, endpoint: tokenEndpoint, client_id: clientId }));
  }
}

/** True when a refresh token can renew the session. */
export function canRefresh() {
  return Boolean(savedRefresh()?.token);
}

let refreshing = null;
/**
 * Renew the access token with the refresh token (RFC 6749 §6); the provider's new
 * refresh token replaces the old one (rotation). One renewal at a time. Resolves to
 * true when a fresh token is in place. A refused refresh token is forgotten.
 */
export function refreshSession() {
  if (refreshing) return refreshing;
  const saved = savedRefresh();
  if (!saved?.token || !saved.endpoint) return Promise.resolve(false);
  refreshing = (async () => {
    try {
      const res = await fetch(saved.endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: saved.token, client_id: saved.client_id }),
      });
      if (!res.ok) {
        if (res.status === 400 || res.status === 401) localStorage.removeItem(REFRESH_KEY);
        return false;
      }
      const body = await res.json();
      if (!body.access_token) return false;
      keepRefresh(body, saved.endpoint, saved.client_id);
      setToken(body.access_token);
      return true;
    } catch {
      return false; // offline: try again on the next request
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** Before an authenticated request: renew a token that expires within the margin. */
export async function freshToken() {
  const user = currentUser();
  const expiring = token && (!user || (user.exp && user.exp * 1000 < Date.now() + REFRESH_MARGIN_MS));
  if (expiring && canRefresh() && navigator.onLine !== false) await refreshSession();
  return token;
}

export function hasRole(role) {
  return currentUser()?.roles.includes(role) ?? false;
}

/** The PWA's login configuration, served by the API next to the app shell. */
export async function loadConfig() {
  if (config) return config;
  if (navigator.onLine !== false) {
    try {
      const res = await fetch('/config.json', { headers: { Accept: 'application/json' } });
      if (res.ok) config = await res.json();
    } catch {
      // Offline after all: fall back to what was seen last time.
    }
  }
  if (config) localStorage.setItem('tb.config', JSON.stringify(config));
  else config = JSON.parse(localStorage.getItem('tb.config') || 'null') || { auth_mode: 'dev', issuer: '', client_id: 'ticketbuster-pwa' };
  return config;
}

/** Local development: the API's built-in dev issuer signs a token for {sub, roles}. */
export async function loginDev(sub, roles, org) {
  const res = await fetch('/api/v1/auth/dev-token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(org ? { sub, roles, org } : { sub, roles }),
  });
  if (!res.ok) {
    let detail = '';
    try {
      detail = (await res.json()).detail || '';
    } catch {
      /* not JSON */
    }
    throw new Error(detail || `HTTP ${res.status}`);
  }
  const body = await res.json();
  setToken(body.access_token);
  return currentUser();
}

async function discovery(issuer) {
  const res = await fetch(`${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
  if (!res.ok) throw new Error(`OIDC discovery: HTTP ${res.status}`);
  return res.json();
}

function redirectUri() {
  return `${location.origin}/`;
}

/** Start Authorization Code + PKCE (S256): go to the provider's login page. */
export async function loginOidc(returnTo = location.hash || '#/') {
  const cfg = await loadConfig();
  const meta = await discovery(cfg.issuer);
  const verifier = b64urlEncode(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = b64urlEncode(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
  const state = b64urlEncode(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state, returnTo, tokenEndpoint: meta.token_endpoint }));
  const url = new URL(meta.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: cfg.client_id,
    redirect_uri: redirectUri(),
    scope: 'openid profile',
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state,
  }).toString();
  location.assign(url.toString());
}

/** Back from the provider with ?code&state: exchange the code for a token. */
export async function completeOidcRedirect() {
  const params = new URLSearchParams(location.search);
  if (!params.has('code') || !params.has('state')) return false;
  const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || 'null');
  sessionStorage.removeItem(PKCE_KEY);
  const clean = () => history.replaceState(null, '', `${location.pathname}${saved?.returnTo || '#/'}`);
  if (!saved || saved.state !== params.get('state')) {
    clean();
    throw new Error('OIDC state mismatch');
  }
  const cfg = await loadConfig();
  const res = await fetch(saved.tokenEndpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: params.get('code'),
      redirect_uri: redirectUri(),
      client_id: cfg.client_id,
      code_verifier: saved.verifier,
    }),
  });
  clean();
  if (!res.ok) throw new Error(`OIDC token: HTTP ${res.status}`);
  const body = await res.json();
  keepRefresh(body, saved.tokenEndpoint, cfg.client_id);
  setToken(body.access_token);
  return true;
}

scheduleRefresh();
