// App shell: router, offline banner, service worker, the buyer's live
// channel, and the offline outbox.
import { applyStatic, getLang, setLang, t } from './i18n.js';
import { completeOidcRedirect, currentUser, hasRole, loadConfig } from './auth.js';
import { h, mount, toast } from './dom.js';
import { UserChannel } from './live.js';
import { flush, startOutbox } from './outbox.js';
import { notify } from './notify.js';
import { savedOrder, rememberOrder, syncTickets } from './wallet.js';

const routes = [
  [/^\/?$/, () => import('./views/catalog.js'), 'catalog'],
  [/^\/events\/(\d+)\/queue$/, () => import('./views/queue.js'), 'catalog'],
  [/^\/events\/(\d+)(?:\/sections\/([^/]+))?$/, () => import('./views/event.js'), 'catalog'],
  [/^\/hold\/([^/]+)$/, () => import('./views/hold.js'), 'catalog'],
  [/^\/payments\/([^/]+)$/, () => import('./views/payment.js'), 'tickets'],
  [/^\/orders\/([^/]+)$/, () => import('./views/order.js'), 'tickets'],
  [/^\/tickets$/, () => import('./views/tickets.js'), 'tickets'],
  [/^\/scan$/, () => import('./views/scanner.js'), 'scan'],
  [/^\/organizer$/, () => import('./views/organizer.js'), 'organizer'],
  [/^\/login$/, () => import('./views/login.js'), 'login'],
];

const main = document.getElementById('main');
let active = null; // {entry, view: {cleanup?, update?}}
let renderSeq = 0;

function currentPath() {
  return decodeURIComponent((location.hash || '#/').slice(1).split('?')[0]) || '/';
}

export function navigate(path, { replace = false } = {}) {
  const hash = `#${path}`;
  if (location.hash === hash) route(true);
  else if (replace) {
    history.replaceState(null, '', hash);
    route();
  } else location.hash = hash;
}

async function route(force = false) {
  const seq = ++renderSeq;
  const path = currentPath();
  let match = null;
  let entry = null;
  for (const r of routes) {
    match = r[0].exec(path);
    if (match) {
      entry = r;
      break;
    }
  }
  const params = match ? match.slice(1).map((m) => (m === undefined ? undefined : decodeURIComponent(m))) : [];
  // Same screen, new parameters (e.g. a section of the same event): let it adapt.
  if (!force && active && entry && active.entry === entry && active.view.update && active.view.update(params)) return;
  if (active?.view.cleanup) {
    try {
      active.view.cleanup();
    } catch {
      /* a view's cleanup must not break navigation */
    }
  }
  active = null;
  updateNav(entry ? entry[2] : '');
  if (!entry) {
    mount(main, h('div', { class: 'empty card' }, h('h1', null, t('err.notFound')), h('a', { class: 'btn', href: '#/' }, t('err.back'))));
    return;
  }
  let view;
  try {
    view = await entry[1]();
  } catch {
    mount(main, h('div', { class: 'empty card' }, h('p', null, t('offline.unavailable'))));
    return;
  }
  if (seq !== renderSeq) return;
  const result = view.render(main, params);
  active = { entry, view: typeof result === 'function' ? { cleanup: result } : result || {} };
  if (document.activeElement && document.activeElement !== document.body && !main.contains(document.activeElement)) {
    main.focus({ preventScroll: true });
  }
  window.scrollTo(0, 0);
}

function updateNav(active) {
  const user = currentUser();
  const scanner = hasRole('scanner') || hasRole('admin');
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
    if (a.dataset.nav === 'scan') a.hidden = !scanner;
    if (a.dataset.nav === 'organizer') a.hidden = !(hasRole('organizer') || hasRole('admin'));
  }
  const account = document.getElementById('account-link');
  account.textContent = user ? user.name : t('nav.login');
  account.title = user ? t('login.signedIn', { sub: user.sub }) : '';
  document.getElementById('account-tab').querySelector('span:last-child').textContent = user ? user.name : t('nav.account');
}

// ---- offline banner ----
function updateOnline() {
  const banner = document.getElementById('offline-banner');
  const wasHidden = banner.hidden;
  banner.hidden = navigator.onLine !== false;
  if (!wasHidden && banner.hidden) toast(t('offline.back'), 'ok', 2500);
}

// ---- the buyer's live channel: order status and hold warnings ----
let userChannel = null;

export async function orderStatusChanged(orderId, status, reason) {
  const prev = await savedOrder(orderId);
  const before = prev?.status;
  await rememberOrder({ id: orderId, status, reason });
  window.dispatchEvent(new CustomEvent('tb:order-status', { detail: { orderId, status, reason } }));
  if (before === status) return;
  if (status === 'confirmed') {
    syncTickets().catch(() => {});
    notify(t('order.confirmedToast'), 'ok', { url: `/#/orders/${orderId}` });
  } else if (status === 'rejected') {
    notify(`${t('order.rejectedToast')} ${reason ? t('order.reason', { reason }) : ''}`, 'err', { url: `/#/orders/${orderId}` });
  }
}

function onUserMessage(frame) {
  if (frame.type === 'order' && frame.order_id) {
    orderStatusChanged(String(frame.order_id), String(frame.status).toLowerCase(), frame.reason);
  } else if (frame.type === 'hold_gone') {
    window.dispatchEvent(new CustomEvent('tb:hold-gone', { detail: frame }));
  } else if (frame.type === 'queue') {
    window.dispatchEvent(new CustomEvent('tb:queue', { detail: frame }));
  } else if (frame.type === 'hold_expiring') {
    toast(t('hold.warningIn', { s: Math.max(0, Math.round(frame.seconds_left)) }), 'warn', 8000);
    window.dispatchEvent(new CustomEvent('tb:hold-warning', { detail: frame }));
  }
}

/** Have the place in an event's waiting room pushed (waiting-room page). */
export function watchQueue(eventId) {
  userChannel?.watchQueue(eventId);
}

/** Ask the server to warn before this hold expires (hold page). */
export function watchHold(holdId) {
  userChannel?.watchHold(holdId);
}

function connectUserChannel() {
  if (userChannel) userChannel.close();
  userChannel = currentUser() ? new UserChannel({ onMessage: onUserMessage }) : null;
}

// ---- service worker ----
async function registerServiceWorker() {
  if (!('serviceWorker' in navigator)) return;
  try {
    await navigator.serviceWorker.register('/sw.js', { scope: '/' });
  } catch {
    // The app works without it; only offline support is lost.
  }
}

async function start() {
  applyStatic();
  const langSelect = document.getElementById('lang-select');
  langSelect.value = getLang();
  langSelect.addEventListener('change', () => setLang(langSelect.value));
  window.addEventListener('tb:lang', () => {
    langSelect.value = getLang();
    route(true);
  });
  window.addEventListener('hashchange', () => route());
  window.addEventListener('online', updateOnline);
  window.addEventListener('offline', updateOnline);
  window.addEventListener('tb:auth', () => {
    updateNav(routes.find((r) => r[0].test(currentPath()))?.[2] || '');
    connectUserChannel();
    // A purchase queued while the session had expired can go now.
    if (currentUser()) flush();
  });
  window.addEventListener('tb:unauthorized', () => toast(t('login.expired'), 'warn'));
  window.addEventListener('tb:order-placed', (ev) => {
    const { order, wasQueued } = ev.detail;
    if (wasQueued) notify(t('order.synced'), 'ok', { url: `/#/orders/${order.order_id}` });
  });
  updateOnline();
  loadConfig();
  try {
    await completeOidcRedirect();
  } catch (err) {
    toast(`${t('login.failed')} ${err.message}`, 'err');
  }
  route();
  registerServiceWorker();
  connectUserChannel();
  startOutbox();
  if (currentUser() && navigator.onLine !== false) syncTickets().catch(() => {});
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') flush();
  });
}

start();
