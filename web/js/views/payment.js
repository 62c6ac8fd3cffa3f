// A payment, followed until the provider has decided: captured -> the order it
// placed; declined -> try again (a new attempt) or back to the hold; expired or
// refunded -> what happened to the money.
import { api, ApiError, OfflineError } from '../api.js';
import { currentUser } from '../auth.js';
import { db } from '../db.js';
import { h, mount } from '../dom.js';
import { money, t } from '../i18n.js';
import { normalizePayment } from '../model.js';
import { navigate } from '../app.js';
import { checkoutHref, forgetAttempt, payAndGo } from '../checkout.js';

// The provider decides; these states end the wait (refunding still moves on to refunded).
const SETTLED = new Set(['declined', 'expired', 'refunded']);

export function render(main, [paymentId]) {
  if (!currentUser()) {
    sessionStorage.setItem('tb.returnTo', `#/payments/${paymentId}`);
    mount(main, h('div', { class: 'empty card' }, h('p', null, t('pay.loginFirst')), h('a', { class: 'btn', href: '#/login' }, t('nav.login'))));
    return undefined;
  }
  let payment = null;
  let pollTimer = null;
  let pollDelay = 600;
  let disposed = false;

  const pill = h('span', { class: 'pill pending', id: 'payment-status', dataset: { status: 'pending' } }, t('pay.status.pending'));
  const amount = h('p', { class: 'total-row' }, h('span', null, t('hold.total')), h('span', { id: 'payment-amount' }, ''));
  const detail = h('div', { class: 'stack', id: 'payment-detail', role: 'status', 'aria-live': 'polite' });
  mount(main, h('div', { class: 'hold-layout' },
    h('section', { class: 'card stack', 'aria-labelledby': 'payment-title' },
      h('div', { class: 'row' }, h('h1', { id: 'payment-title' }, t('pay.title')), h('span', { class: 'spacer' }), pill),
      amount, detail)));

  async function holdAlive(holdId) {
    try {
      await api.hold(holdId);
      return true;
    } catch {
      return false;
    }
  }

  async function tryAgain(button) {
    button.disabled = true;
    forgetAttempt(payment.holdId);
    try {
      if (!(await payAndGo(payment.holdId))) mount(detail, h('div', { class: 'error-box', role: 'alert' }, t('pay.unsupported')));
    } catch (err) {
      button.disabled = false;
      const gone = err instanceof ApiError && (err.status === 404 || err.status === 410);
      mount(detail, h('div', { class: 'error-box', role: 'alert', id: 'pay-error' },
        gone ? t('pay.holdGone') : err instanceof OfflineError ? t('err.offline') : err?.problem?.detail || t('err.generic')),
      payment.eventId ? h('a', { class: 'btn btn-ghost', href: `#/events/${payment.eventId}` }, t('hold.backToMap')) : null);
    }
  }

  async function show() {
    const p = payment;
    pill.className = `pill ${p.status}`;
    pill.dataset.status = p.status;
    pill.textContent = t(`pay.status.${p.status}`);
    amount.lastChild.textContent = p.amount !== undefined ? money(p.amount, p.currency) : '';
    const reason = p.reason && p.reason !== p.status ? h('p', { class: 'muted small' }, t('order.reason', { reason: p.reason })) : null;
    if (p.status === 'pending') {
      const href = checkoutHref(p);
      mount(detail, h('p', null, h('span', { class: 'spinner dark' }), ' ', t('pay.waiting')),
        href ? h('a', { class: 'btn btn-ghost', id: 'open-checkout', href }, t('pay.openCheckout')) : h('div', { class: 'error-box' }, t('pay.unsupported')));
    } else if (p.status === 'captured') {
      mount(detail, h('p', null, h('span', { class: 'spinner dark' }), ' ', t('pay.placing')));
    } else if (p.status === 'declined') {
      const alive = p.holdId ? await holdAlive(p.holdId) : false;
      if (disposed) return;
      const again = h('button', { type: 'button', class: 'btn btn-accent', id: 'pay-again', onclick: () => tryAgain(again) }, t('pay.tryAgain'));
      mount(detail, h('div', { class: 'error-box', role: 'alert' }, t('pay.declined')), reason,
        alive ? h('div', { class: 'row' }, again, h('a', { class: 'btn btn-ghost', id: 'back-to-hold', href: `#/hold/${encodeURIComponent(p.holdId)}` }, t('pay.backToHold')))
          : [h('p', { class: 'notice' }, t('pay.holdGone')), p.eventId ? h('a', { class: 'btn btn-ghost', href: `#/events/${p.eventId}` }, t('hold.backToMap')) : null]);
    } else if (p.status === 'expired') {
      mount(detail, h('p', { class: 'notice' }, t('pay.expired')),
        p.eventId ? h('a', { class: 'btn btn-ghost', href: `#/events/${p.eventId}` }, t('hold.backToMap')) : null);
    } else if (p.status === 'refunding' || p.status === 'refunded') {
      mount(detail, h('p', { class: 'notice' }, t(p.status === 'refunded' ? 'pay.refunded' : 'pay.refunding')), reason,
        p.orderId ? h('a', { class: 'btn btn-ghost', href: `#/orders/${encodeURIComponent(p.orderId)}` }, t('pay.seeOrder')) : null);
    }
  }

  async function captured(p) {
    // Remembered as this device's order for the hold, so the hold page leads to it.
    const prev = (await db.get('kv', `order:${p.orderId}`)) || {};
    await db.put('kv', { status: 'pending', ...prev, order_id: p.orderId, hold_id: p.holdId, event_id: p.eventId, total: p.amount, currency: p.currency, payment_id: p.id, placed_at: prev.placed_at || Date.now() }, `order:${p.orderId}`);
    if (p.holdId) {
      forgetAttempt(p.holdId);
      sessionStorage.removeItem(`tb.hold.${p.holdId}`);
    }
    if (!disposed) navigate(`/orders/${encodeURIComponent(p.orderId)}`, { replace: true });
  }

  async function poll() {
    if (disposed) return;
    try {
      payment = normalizePayment(await api.payment(paymentId));
      if (disposed) return;
      if (payment.status === 'captured' && payment.orderId) {
        await captured(payment);
        return;
      }
      if (payment.holdId && (payment.status === 'declined' || payment.status === 'expired')) forgetAttempt(payment.holdId);
      await show();
      if (SETTLED.has(payment.status)) return;
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        mount(detail, h('div', { class: 'error-box', role: 'alert' }, t('pay.notFound')), h('a', { class: 'btn', href: '#/' }, t('err.back')));
        return;
      }
      if (!(err instanceof OfflineError) && !(err instanceof ApiError)) throw err;
    }
    if (disposed) return;
    // The webhook is asynchronous: ask again, a little less often each time.
    pollDelay = Math.min(5000, pollDelay * 1.4);
    pollTimer = setTimeout(poll, pollDelay);
  }

  const onOnline = () => {
    clearTimeout(pollTimer);
    pollDelay = 600;
    poll();
  };
  window.addEventListener('online', onOnline);
  poll();

  return () => {
    disposed = true;
    clearTimeout(pollTimer);
    window.removeEventListener('online', onOnline);
  };
}
