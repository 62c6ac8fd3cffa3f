// Waiting room of a queued on-sale: join once, then the place (position, progress,
// estimated wait) polled every few seconds, announced in a live region; "you are in"
// with the admission's remaining time once admitted. The place is the server's (joining
// again is idempotent), so a reload, a closed tab or an offline blip keeps it.
import { api, ApiError, OfflineError, rememberAdmission, serverNow } from '../api.js';
import { currentUser } from '../auth.js';
import { h, mount } from '../dom.js';
import { number, t } from '../i18n.js';
import { navigate, watchQueue } from '../app.js';

const POLL_MS = 3000;
// While places arrive over the WebSocket, polling is only the fallback.
const POLL_PUSHED_MS = 15000;

function leadingZeroBits(bytes) {
  let bits = 0;
  for (const b of bytes) {
    if (b === 0) {
      bits += 8;
      continue;
    }
    return bits + Math.clz32(b) - 24;
  }
  return bits;
}

/** The proof of work the queue may ask for: a nonce with SHA-256(challenge:sub:nonce)
 * starting with `bits` zero bits (cheap for one phone, costly for a bot farm). */
async function solveProof(challenge, sub, bits) {
  const encoder = new TextEncoder();
  for (let nonce = 0; ; nonce += 1) {
    const digest = await crypto.subtle.digest('SHA-256', encoder.encode(`${challenge}:${sub}:${nonce}`));
    if (leadingZeroBits(new Uint8Array(digest)) >= bits) return `${challenge}:${nonce}`;
  }
}

function clock(ms) {
  const total = Math.max(0, Math.round(ms / 1000));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, '0')}`;
}

export function render(main, [eventIdStr]) {
  const eventId = Number(eventIdStr);
  const firstKey = `tb.queue.first.${eventId}`;
  let timer = null;
  let tick = null;
  let disposed = false;
  let lastAnnounced = '';
  let queueInfo = null;
  let pushedAt = 0;
  const pollDelay = () => (Date.now() - pushedAt < POLL_PUSHED_MS ? POLL_PUSHED_MS : POLL_MS);
  const onPush = (ev) => {
    const frame = ev.detail;
    if (disposed || frame.event_id !== eventId) return;
    pushedAt = Date.now();
    show(frame);
    if (frame.status === 'admitted') clearTimeout(timer);
  };
  window.addEventListener('tb:queue', onPush);

  const title = h('h1', { id: 'queue-title' }, t('queue.title'));
  const info = h('p', { class: 'muted', id: 'queue-info' }, '');
  const position = h('p', { class: 'queue-position', id: 'queue-position' }, '');
  const bar = h('div', { class: 'queue-bar' }, h('div', { class: 'queue-bar-fill', style: { width: '0%' } }));
  const progress = h('div', { role: 'progressbar', id: 'queue-progress', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': 0, 'aria-label': t('queue.progress') }, bar);
  const eta = h('p', { id: 'queue-eta' }, '');
  // Announced to screen readers when the place changes (at most every poll).
  const live = h('div', { id: 'queue-live', role: 'status', 'aria-live': 'polite', class: 'visually-hidden' }, '');
  const joinBtn = h('button', { type: 'button', class: 'btn btn-accent', id: 'queue-join', hidden: true, onclick: () => join() }, t('queue.join'));
  const inBox = h('div', { id: 'queue-in', class: 'card stack', hidden: true },
    h('h2', null, t('queue.in')),
    h('p', { id: 'queue-in-left' }, ''),
    h('a', { class: 'btn btn-accent', id: 'queue-go', href: `#/events/${eventId}` }, t('queue.choose')));

  mount(main, h('section', { class: 'card stack queue', 'aria-labelledby': 'queue-title' },
    title, info, position, progress, eta, joinBtn, inBox, live));

  function announce(text) {
    if (text && text !== lastAnnounced) {
      lastAnnounced = text;
      live.textContent = text;
    }
  }

  function showWaiting(view) {
    inBox.hidden = true;
    joinBtn.hidden = true;
    if (view.status === 'sold_out') {
      position.textContent = t('queue.soldOut');
      eta.textContent = '';
      announce(t('queue.soldOut'));
      return;
    }
    if (view.position === null || view.position === undefined) {
      position.textContent = t('queue.pre', { n: number(view.waiting) });
      eta.textContent = t('queue.preNote');
      announce(t('queue.pre', { n: number(view.waiting) }));
      return;
    }
    // Progress against the place first seen after the draw (kept across reloads).
    const first = Math.max(Number(localStorage.getItem(firstKey)) || 0, view.position);
    localStorage.setItem(firstKey, String(first));
    const done = first > 1 ? Math.round(((first - view.position) / (first - 1)) * 100) : 100;
    bar.firstChild.style.width = `${done}%`;
    progress.setAttribute('aria-valuenow', String(done));
    position.textContent = t('queue.position', { n: number(view.position) });
    eta.textContent = view.eta_s ? t('queue.eta', { t: clock(view.eta_s * 1000) }) : '';
    announce(t('queue.position', { n: number(view.position) }));
  }

  function showAdmitted(view) {
    rememberAdmission(eventId, view.admission, view.admission_expires_at);
    joinBtn.hidden = true;
    inBox.hidden = false;
    position.textContent = '';
    eta.textContent = '';
    bar.firstChild.style.width = '100%';
    progress.setAttribute('aria-valuenow', '100');
    announce(t('queue.in'));
    const left = document.getElementById('queue-in-left');
    const update = () => {
      const ms = view.admission_expires_at - serverNow();
      left.textContent = ms > 0 ? t('queue.inLeft', { t: clock(ms) }) : t('queue.inOver');
    };
    update();
    clearInterval(tick);
    tick = setInterval(update, 1000);
  }

  function show(view) {
    if (view.status === 'admitted') showAdmitted(view);
    else showWaiting(view);
  }

  async function poll() {
    if (disposed) return;
    try {
      const view = await api.queuePosition(eventId);
      show(view);
      watchQueue(eventId);
      if (view.status === 'admitted') return; // no more polling: the token is kept
    } catch (err) {
      if (err instanceof ApiError && err.code === 'not_queued') {
        joinBtn.hidden = false;
        return;
      }
      if (!(err instanceof OfflineError)) info.textContent = err.problem?.detail || t('err.generic');
    }
    timer = setTimeout(poll, pollDelay());
  }

  async function join() {
    if (!currentUser()) {
      navigate('/login');
      return;
    }
    joinBtn.disabled = true;
    try {
      let proof;
      if (queueInfo?.pow_bits > 0) {
        info.textContent = t('queue.proving');
        // A fresh challenge: the one on the page may be from an older window.
        queueInfo = await api.queue(eventId);
        proof = await solveProof(queueInfo.pow_challenge, currentUser().sub, queueInfo.pow_bits);
      }
      show(await api.joinQueue(eventId, proof));
      if (proof) info.textContent = t('queue.info', { rate: number(queueInfo.rate_per_min), n: number(queueInfo.waiting) });
      watchQueue(eventId);
      clearTimeout(timer);
      timer = setTimeout(poll, pollDelay());
    } catch (err) {
      info.textContent = err instanceof OfflineError ? t('err.offline') : err.problem?.detail || t('err.generic');
    } finally {
      joinBtn.disabled = false;
    }
  }

  async function load() {
    try {
      const q = await api.queue(eventId);
      queueInfo = q;
      info.textContent = t('queue.info', { rate: number(q.rate_per_min), n: number(q.waiting) });
    } catch (err) {
      info.textContent = err instanceof ApiError && err.status === 404 ? t('queue.none') : t('err.generic');
      return;
    }
    if (!currentUser()) {
      joinBtn.hidden = false;
      return;
    }
    poll();
  }

  load();
  return {
    cleanup() {
      disposed = true;
      window.removeEventListener('tb:queue', onPush);
      clearTimeout(timer);
      clearInterval(tick);
    },
  };
}
