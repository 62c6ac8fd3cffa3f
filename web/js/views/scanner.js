// Gate scanner (staff): verify the ticket's signature offline against the
// cached JWKS, then check in online: admitted / already used / invalid.
import { ApiError, OfflineError, api } from '../api.js';
import { currentUser, hasRole } from '../auth.js';
import { h, mount } from '../dom.js';
import { dateTime, number, t } from '../i18n.js';
import { cachedJwks, refreshJwks, verifyTicket } from '../gate.js';
import { queueCheckin } from '../outbox.js';

export function render(main) {
  const input = h('textarea', { class: 'input', id: 'scan-token', rows: 4, spellcheck: 'false', autocomplete: 'off', autocapitalize: 'off', placeholder: 'eyJhbGciOi…' });
  const submit = h('button', { type: 'submit', class: 'btn btn-accent', id: 'scan-submit' }, t('scan.check'));
  const keysNote = h('p', { class: 'muted small', id: 'scan-keys' });
  const verdict = h('div', { id: 'scan-verdict', role: 'status', 'aria-live': 'assertive' });
  const history = h('ul', { class: 'seat-list small' });
  const video = h('video', { class: 'scan-video', hidden: true, playsinline: true, muted: true });
  const cameraBtn = h('button', { type: 'button', class: 'btn btn-ghost', hidden: !('BarcodeDetector' in window) }, t('scan.camera'));
  let jwks = null;
  let stream = null;
  let busy = false;

  if (!currentUser()) sessionStorage.setItem('tb.returnTo', '#/scan');

  mount(main,
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, t('scan.title')), h('p', null, t('scan.subtitle')))),
    h('div', { class: 'scan-layout' },
      h('form', { class: 'card stack', onsubmit: (ev) => { ev.preventDefault(); check(); } },
        h('div', { class: 'field' }, h('label', { for: 'scan-token' }, t('scan.token')), input),
        h('div', { class: 'row' }, submit, cameraBtn),
        video,
        keysNote,
        hasRole('scanner') || hasRole('admin') ? null : h('p', { class: 'notice' }, t('scan.needRole'))),
      h('div', { class: 'stack' }, verdict, h('section', { class: 'card' }, h('h2', null, t('scan.history')), history))));

  function showKeys() {
    keysNote.textContent = jwks?.keys?.length ? t('scan.keys', { n: number(jwks.keys.length) }) : t('scan.noKeys');
  }
  cachedJwks().then((k) => { jwks = k; showKeys(); return refreshJwks(); }).then((k) => { if (k) jwks = k; showKeys(); });

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

  function show(kind, title, sub, claims) {
    mount(verdict, h('div', { class: `verdict ${kind}`, dataset: { verdict: kind } },
      h('div', { class: 'big' }, title), h('div', null, sub), facts(claims)));
    if (kind !== 'checking') {
      history.prepend(h('li', null, h('span', { class: `pill ${kind === 'admitted' ? 'ok' : kind === 'used' ? 'pending' : kind === 'queued' ? 'queued' : 'err'}` }, title),
        h('span', { class: 'muted' }, claims?.seat ?? claims?.seat_id ?? ''), h('span', { class: 'price muted small' }, new Date().toLocaleTimeString())));
      while (history.children.length > 8) history.lastElementChild.remove();
    }
  }

  async function check() {
    const token = input.value.trim().replace(/\s+/g, '');
    if (!token || busy) return;
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
        show('invalid', t('scan.invalid'), t('scan.invalidSub'), result.claims);
        return;
      }
      try {
        await api.checkin(token);
        show('admitted', t('scan.admitted'), t('scan.admittedSub'), result.claims);
      } catch (err) {
        if (err instanceof OfflineError && result.valid) {
          await queueCheckin(token, result.claims);
          show('queued', t('scan.offlineValid'), t('scan.offlineValidSub'), result.claims);
        } else if (err instanceof ApiError && err.status === 409) {
          const p = err.problem;
          const when = p.used_at || p.checked_in_at || p.first_scan_at || p.at;
          show('used', t('scan.used'), when ? t('scan.usedSub', { time: dateTime(when) }) : p.detail || '', result.claims);
        } else if (err instanceof ApiError && (err.status === 422 || err.status === 404 || err.status === 400)) {
          show('invalid', t('scan.invalid'), err.problem.detail || t('scan.invalidSub'), result.claims);
        } else if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
          show('invalid', t('scan.needRole'), '', result.claims);
        } else {
          show('invalid', t('err.generic'), err.message || '', result.claims);
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
      const detector = new window.BarcodeDetector({ formats: ['qr_code'] });
      const loop = async () => {
        if (!stream) return;
        try {
          const codes = await detector.detect(video);
          if (codes.length && codes[0].rawValue !== input.value) {
            input.value = codes[0].rawValue;
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
    if (error instanceof ApiError && error.status === 409) show('used', t('scan.used'), error.problem.detail || '', entry.claims);
    else if (!error) show('admitted', t('scan.admitted'), t('scan.admittedSub'), entry.claims);
  };
  window.addEventListener('tb:checkin-synced', onSynced);
  return () => {
    stopCamera();
    window.removeEventListener('tb:checkin-synced', onSynced);
  };
}
