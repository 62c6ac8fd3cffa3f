// Gate scanner (staff). A shift is a scanner session: one event and one gate name. Each
// ticket's signature is verified offline against the cached JWKS; online the API admits
// it (or says why not), offline the device judges it with the rules of core/gate.py and
// what it downloaded last (admitted and revoked tickets, the event's status), remembers
// the admission, and queues it for the API.
import { ApiError, OfflineError, api } from '../api.js';
import { currentUser, hasRole } from '../auth.js';
import { h, mount } from '../dom.js';
import { dateTime, number, t } from '../i18n.js';
import {
  cachedJwks,
  gateLedger,
  gateSession,
  judgeOffline,
  mergeSnapshot,
  recordAdmission,
  refreshJwks,
  setGateSession,
  verifyTicket,
} from '../gate.js';
import { checkinsNeedLogin, flush, queueCheckin, queueRefusal, waitingCheckins } from '../outbox.js';
import { cameraAvailable, qrDetector, warmDecoder } from '../camera.js';

const SNAPSHOT_EVERY_MS = 30000;
const REFUSALS = {
  wrong_event: 'scan.wrongEvent',
  ticket_revoked: 'scan.revoked',
  event_cancelled: 'scan.cancelled',
  event_over: 'scan.over',
};

export function render(main) {
  const input = h('textarea', { class: 'input', id: 'scan-token', rows: 4, spellcheck: 'false', autocomplete: 'off', autocapitalize: 'off', placeholder: 'eyJhbGciOi…' });
  const submit = h('button', { type: 'submit', class: 'btn btn-accent', id: 'scan-submit' }, t('scan.check'));
  const keysNote = h('p', { class: 'muted small', id: 'scan-keys' });
  const pendingNote = h('div', { class: 'notice', id: 'scan-pending', role: 'status', hidden: true });
  const verdict = h('div', { id: 'scan-verdict', role: 'status', 'aria-live': 'assertive' });
  const history = h('ul', { class: 'seat-list small' });
  const video = h('video', { class: 'scan-video', hidden: true, playsinline: true, muted: true });
  const cameraBtn = h('button', { type: 'button', class: 'btn btn-ghost', id: 'scan-camera', hidden: !cameraAvailable() }, t('scan.camera'));
  const sessionBox = h('section', { class: 'card stack', id: 'gate-session' });
  const countsNote = h('p', { class: 'muted small', id: 'gate-counts', role: 'status' });
  let jwks = null;
  let stream = null;
  let busy = false;
  let session = gateSession();
  let snapshotTimer = null;

  if (!currentUser()) sessionStorage.setItem('tb.returnTo', '#/scan');

  mount(main,
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, t('scan.title')), h('p', null, t('scan.subtitle')))),
    h('div', { class: 'scan-layout' },
      h('div', { class: 'stack' },
        sessionBox,
        h('form', { class: 'card stack', onsubmit: (ev) => { ev.preventDefault(); check(); } },
          h('div', { class: 'field' }, h('label', { for: 'scan-token' }, t('scan.token')), input),
          h('div', { class: 'row' }, submit, cameraBtn),
          video,
          keysNote,
          hasRole('scanner') || hasRole('admin') ? null : h('p', { class: 'notice' }, t('scan.needRole')))),
      h('div', { class: 'stack' }, pendingNote, verdict, h('section', { class: 'card' }, h('h2', null, t('scan.history')), history))));

  // ---- the session: which event this gate admits, and the gate's name ----
  async function renderSession() {
    if (!session) {
      const eventInput = h('input', { class: 'input', id: 'gate-event', type: 'number', min: 1, required: true, inputmode: 'numeric', list: 'gate-events' });
      const gateInput = h('input', { class: 'input', id: 'gate-name', required: true, maxlength: 40, pattern: '[A-Za-z0-9][A-Za-z0-9 ._\\-]*', value: localStorage.getItem('tb.gate.lastName') || '' });
      const events = h('datalist', { id: 'gate-events' });
      const error = h('p', { class: 'error-box', role: 'alert', hidden: true });
      const form = h('form', { class: 'stack', onsubmit: async (ev) => {
        ev.preventDefault();
        error.hidden = true;
        const next = { event_id: Number(eventInput.value), gate: gateInput.value.trim() };
        const ok = await startSession(next);
        if (!ok) {
          error.textContent = t('scan.eventUnknown');
          error.hidden = false;
        }
      } },
      h('div', { class: 'field' }, h('label', { for: 'gate-event' }, t('scan.sessionEvent')), eventInput, events),
      h('div', { class: 'field' }, h('label', { for: 'gate-name' }, t('scan.sessionGate')), gateInput),
      error,
      h('button', { type: 'submit', class: 'btn', id: 'gate-start' }, t('scan.start')));
      mount(sessionBox, h('h2', null, t('scan.session')), h('p', { class: 'muted small' }, t('scan.noSession')), form);
      api.events({ limit: 50 }).then((page) => {
        for (const e of page?.items || []) events.append(h('option', { value: e.id }, e.title));
      }).catch(() => {});
      return;
    }
    const ledger = await gateLedger(session.event_id);
    const title = ledger.event?.title || `#${session.event_id}`;
    mount(sessionBox,
      h('h2', null, t('scan.session')),
      h('p', { id: 'gate-bound', dataset: { event: String(session.event_id), gate: session.gate } },
        t('scan.bound', { title, id: session.event_id, gate: session.gate })),
      ledger.event?.status === 'cancelled' ? h('p', { class: 'notice' }, t('scan.cancelledSub')) : null,
      countsNote,
      h('button', { type: 'button', class: 'btn btn-ghost', id: 'gate-change', onclick: () => { setGateSession(null); session = null; renderSession(); } }, t('scan.change')));
  }

  async function pullSnapshot() {
    if (!session || navigator.onLine === false) return false;
    const ledger = await gateLedger(session.event_id);
    try {
      const snapshot = await api.gateSnapshot(session.event_id, ledger.event ? ledger.as_of : null);
      await mergeSnapshot(session.event_id, snapshot);
      showCounts();
      return true;
    } catch (err) {
      return !(err instanceof ApiError && err.status === 404);
    }
  }

  // This gate's admissions and the event's (GET /events/{id}/gates), when online.
  async function showCounts() {
    if (!session) return;
    try {
      const counts = await api.gateCounts(session.event_id);
      const mine = (counts.gates || []).find((g) => g.gate === session.gate);
      countsNote.dataset.gateAdmitted = String(mine?.admitted || 0);
      countsNote.textContent = t('scan.counts', { gate: session.gate, n: number(mine?.admitted || 0), admitted: number(counts.admitted), sold: number(counts.sold) });
    } catch {
      /* offline or not allowed: the counts stay as they were */
    }
  }

  async function startSession(next) {
    if (!Number.isInteger(next.event_id) || next.event_id < 1 || !next.gate) return false;
    const previous = session;
    session = next;
    const known = (await gateLedger(next.event_id)).event;
    const ok = (await pullSnapshot()) || Boolean(known);
    if (!ok) {
      session = previous;
      return false;
    }
    setGateSession(next);
    localStorage.setItem('tb.gate.lastName', next.gate);
    warmDecoder().catch(() => {});
    await renderSession();
    return true;
  }

  function scheduleSnapshots() {
    clearTimeout(snapshotTimer);
    snapshotTimer = setTimeout(async () => {
      await pullSnapshot();
      scheduleSnapshots();
    }, SNAPSHOT_EVERY_MS);
  }

  // ---- check-ins waiting for the API ----
  async function showPending(detail) {
    const count = detail ? detail.count : (await waitingCheckins()).length;
    const needLogin = detail ? detail.needLogin : checkinsNeedLogin();
    pendingNote.hidden = count === 0;
    pendingNote.dataset.count = String(count);
    if (!count) return;
    mount(pendingNote, h('span', null, t('scan.waiting', { n: number(count) })),
      needLogin ? [' ', h('a', { href: '#/login', id: 'scan-relogin', onclick: () => sessionStorage.setItem('tb.returnTo', '#/scan') }, t('scan.waitingLogin'))] : null);
  }

  function showKeys() {
    keysNote.textContent = jwks?.keys?.length ? t('scan.keys', { n: number(jwks.keys.length) }) : t('scan.noKeys');
  }
  cachedJwks().then((k) => { jwks = k; showKeys(); return refreshJwks(); }).then((k) => { if (k) jwks = k; showKeys(); });
  renderSession().then(() => pullSnapshot()).then(() => { if (session) renderSession(); });
  scheduleSnapshots();
  showPending();

  function facts(claims, extra) {
    if (!claims) return null;
    const rows = [];
    if (claims.event ?? claims.event_id) rows.push([t('scan.event'), String(claims.event ?? claims.event_id)]);
    if (claims.seat ?? claims.seat_id) rows.push([t('scan.seat'), String(claims.seat ?? claims.seat_id)]);
    const tid = claims.ticket ?? claims.ticket_id ?? claims.jti;
    if (tid) rows.push([t('scan.ticket'), String(tid).slice(0, 8)]);
    if (extra) rows.push(extra);
    return rows.length ? h('dl', null, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])) : null;
  }

  const PILL = { admitted: 'ok', used: 'pending', queued: 'queued' };
  function show(kind, title, sub, claims, reason) {
    mount(verdict, h('div', { class: `verdict ${kind === 'refused' ? 'invalid' : kind}`, dataset: { verdict: kind, reason: reason || '' } },
      h('div', { class: 'big' }, title), h('div', null, sub), facts(claims)));
    if (kind !== 'checking') {
      history.prepend(h('li', null, h('span', { class: `pill ${PILL[kind] || 'err'}` }, title),
        h('span', { class: 'muted' }, claims?.seat ?? claims?.seat_id ?? ''), h('span', { class: 'price muted small' }, new Date().toLocaleTimeString())));
      while (history.children.length > 8) history.lastElementChild.remove();
    }
  }

  function showUsed(at, gate, claims) {
    const sub = at ? (gate ? t('scan.usedAt', { time: dateTime(at), gate }) : t('scan.usedSub', { time: dateTime(at) })) : '';
    show('used', t('scan.used'), sub, claims, 'already_used');
  }

  function showRefusal(code, claims, detail = {}) {
    const key = REFUSALS[code];
    if (!key) {
      show('invalid', t('scan.invalid'), detail.detail || t('scan.invalidSub'), claims, code);
      return;
    }
    const sub = t(`${key}Sub`, { event: detail.ticketEvent ?? claims?.event ?? '', gateEvent: session?.event_id ?? '' });
    show('refused', t(key), sub, claims, code);
  }

  // Offline (or the request never arrived): the device's own judgement.
  async function judgeHere(token, claims) {
    const ledger = await gateLedger(session.event_id);
    const local = judgeOffline(claims, session, ledger);
    if (!local.ok) await queueRefusal(claims, session, local.code);
    if (local.code === 'already_used') return showUsed(local.at, local.gate, claims);
    if (!local.ok) return showRefusal(local.code, claims, local);
    await queueCheckin(token, claims, session);
    await recordAdmission(session.event_id, String(claims.ticket), Date.now(), session.gate, true);
    show('queued', t('scan.offlineValid'), t('scan.offlineValidSub'), claims);
    return undefined;
  }

  async function check() {
    const token = input.value.trim().replace(/\s+/g, '');
    if (!token || busy) return;
    if (!session) {
      show('refused', t('scan.noSessionTitle'), t('scan.noSession'), null, 'no_session');
      document.getElementById('gate-event')?.focus();
      return;
    }
    busy = true;
    submit.disabled = true;
    show('checking', t('scan.checking'), '', null);
    try {
      if (!jwks?.keys?.length) jwks = await refreshJwks();
      let result = await verifyTicket(token, jwks);
      if (result.valid === false && result.reason === 'unknown_kid' && navigator.onLine !== false) {
        jwks = await refreshJwks(); // keys rotated since the last download
        showKeys();
        result = await verifyTicket(token, jwks);
      }
      if (result.valid === false) {
        // Caught here, never sent as a check-in; the scan log still hears of it.
        await queueRefusal(null, session, 'invalid_ticket');
        flush();
        show('invalid', t('scan.invalid'), t('scan.invalidSub'), result.claims);
        return;
      }
      const claims = result.claims;
      // Scanned here while offline and not yet sent: already in, whatever the API says later.
      const seen = (await gateLedger(session.event_id)).admitted[String(claims?.ticket ?? '')];
      if (seen?.local) {
        await queueRefusal(claims, session, 'already_used');
        showUsed(seen.at, seen.gate, claims);
        return;
      }
      if (navigator.onLine === false && result.valid) {
        await judgeHere(token, claims);
        return;
      }
      try {
        const admitted = await api.checkin(token, session);
        await recordAdmission(session.event_id, admitted.ticket_id, admitted.checked_in_at, admitted.gate);
        show('admitted', t('scan.admitted'), t('scan.admittedSub'), claims);
        showCounts();
      } catch (err) {
        if (err instanceof OfflineError && result.valid) {
          await judgeHere(token, claims);
        } else if (err instanceof ApiError && err.status === 409) {
          const p = err.problem;
          if (err.code === 'already_used') {
            await recordAdmission(session.event_id, String(claims.ticket), p.checked_in_at, p.gate || '');
            showUsed(p.checked_in_at, p.gate, claims);
          } else {
            showRefusal(err.code, claims, { ticketEvent: p.ticket_event_id, detail: p.detail });
          }
        } else if (err instanceof ApiError && (err.status === 422 || err.status === 404 || err.status === 400)) {
          show('invalid', t('scan.invalid'), err.problem.detail || t('scan.invalidSub'), claims);
        } else if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
          show('invalid', t('scan.needRole'), '', claims);
        } else {
          show('invalid', t('err.generic'), err.message || '', claims);
        }
      }
    } finally {
      busy = false;
      submit.disabled = false;
      input.select();
    }
  }

  async function stopCamera() {
    if (stream) for (const track of stream.getTracks()) track.stop();
    stream = null;
    video.hidden = true;
    cameraBtn.textContent = t('scan.camera');
  }

  cameraBtn.addEventListener('click', async () => {
    if (stream) return stopCamera();
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
      video.srcObject = stream;
      video.hidden = false;
      await video.play();
      cameraBtn.textContent = t('scan.stopCamera');
      const detector = await qrDetector();
      video.dataset.detector = detector.kind;
      const loop = async () => {
        if (!stream) return;
        try {
          const codes = await detector.detect(video);
          if (codes.length && codes[0] !== input.value && !busy) {
            input.value = codes[0];
            check();
          }
        } catch {
          /* a frame that could not be read */
        }
        setTimeout(loop, 300);
      };
      loop();
    } catch {
      stopCamera();
    }
    return undefined;
  });

  const onSynced = (ev) => {
    const { entry, error } = ev.detail;
    if (error instanceof ApiError && error.code === 'already_used') showUsed(error.problem.checked_in_at, error.problem.gate, entry.claims);
    else if (error instanceof ApiError && error.status === 409) showRefusal(error.code, entry.claims, { ticketEvent: error.problem.ticket_event_id });
    else if (!error) show('admitted', t('scan.admitted'), t('scan.admittedSub'), entry.claims);
  };
  const onWaiting = (ev) => showPending(ev.detail);
  const onOnline = () => pullSnapshot().then(() => flush());
  window.addEventListener('tb:checkin-synced', onSynced);
  window.addEventListener('tb:checkins-waiting', onWaiting);
  window.addEventListener('online', onOnline);
  return () => {
    stopCamera();
    clearTimeout(snapshotTimer);
    window.removeEventListener('tb:checkin-synced', onSynced);
    window.removeEventListener('tb:checkins-waiting', onWaiting);
    window.removeEventListener('online', onOnline);
  };
}
