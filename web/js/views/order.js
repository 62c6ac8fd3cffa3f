// Order status, live: pending -> confirmed (tickets ready) or rejected; its payment,
// its refunds, and the buyer's own cancellation.
import { api, ApiError, OfflineError } from '../api.js';
import { h, mount, toast } from '../dom.js';
import { dateLong, money, t } from '../i18n.js';
import { normalizeRefund, parseSeatId } from '../model.js';
import { askPermission, notificationPermission } from '../notify.js';
import { fetchOrder, savedOrder, syncTickets } from '../wallet.js';
import { orderStatusChanged } from '../app.js';

export function render(main, [orderId]) {
  let status = 'pending';
  let reason = null;
  let record = null;
  let pollTimer = null;
  let pollDelay = 700;
  let disposed = false;
  let order = null; // what the API said last
  let refunds = [];
  let cancelError = null;

  const pill = h('span', { class: 'pill pending', id: 'order-status', dataset: { status: 'pending' } }, t('order.pending'));
  const steps = h('ol', { class: 'steps', 'aria-label': t('order.title') });
  const detail = h('div', { class: 'stack' });
  const ask = h('div', { class: 'notice row', hidden: true },
    h('span', null, t('notif.permission')), h('span', { class: 'spacer' }),
    h('button', { type: 'button', class: 'btn btn-sm', onclick: async () => { await askPermission(); ask.hidden = true; } }, t('notif.allow')),
    h('button', { type: 'button', class: 'btn btn-ghost btn-sm', onclick: () => { ask.hidden = true; localStorage.setItem('tb.notif.asked', '1'); } }, t('notif.later')));

  mount(main, h('div', { class: 'hold-layout' },
    h('section', { class: 'card stack', 'aria-labelledby': 'order-title' },
      h('div', { class: 'row' }, h('h1', { id: 'order-title' }, t('order.title')), h('span', { class: 'spacer' }), pill),
      h('p', { class: 'muted small' }, `${t('order.id')} ${orderId}`),
      steps, ask, detail)));

  if (notificationPermission() === 'default' && !localStorage.getItem('tb.notif.asked')) ask.hidden = false;

  function renderStatus() {
    if (status !== 'pending') ask.hidden = true;
    pill.className = `pill ${status}`;
    pill.dataset.status = status;
    pill.textContent = t(`order.${status}`) || status;
    const list = [];
    if (record?.key && record.queued) list.push(['done', t('order.step.queued')]);
    list.push(['done', t('order.step.placed')]);
    if (status === 'pending') list.push(['active', t('order.step.confirming')]);
    else if (status === 'confirmed') list.push(['done', t('order.step.confirming')], ['done', t('order.step.confirmed')]);
    else list.push(['failed', t('order.step.rejected')]);
    mount(steps, list.map(([cls, text]) => h('li', { class: cls }, text)));
    const parts = [];
    if (record?.total !== undefined && record?.total !== null) parts.push(h('div', { class: 'total-row' }, h('span', null, t('hold.total')), h('span', null, money(record.total, record.currency))));
    if (record?.seats?.length) parts.push(h('p', { class: 'muted' }, record.seats.join(', ')));
    if (status === 'rejected' && reason) parts.push(h('div', { class: 'error-box' }, t('order.reason', { reason })));
    if (order?.payment) parts.push(paymentBox(order));
    if (order?.refunded) parts.push(h('div', { class: 'total-row', id: 'order-refunded' }, h('span', null, t('order.refundedAmount')), h('span', null, money(order.refunded, order.currency))));
    if (order?.tickets?.length) parts.push(ticketList(order.tickets));
    if (refunds.length) parts.push(refundList());
    if (status === 'confirmed') parts.push(h('a', { class: 'btn btn-accent', href: '#/tickets', id: 'see-tickets' }, t('order.seeTickets')));
    if (cancelError) parts.push(h('div', { class: 'error-box', role: 'alert', id: 'cancel-error' }, cancelError));
    if (cancellable()) parts.push(h('button', { type: 'button', class: 'btn btn-danger btn-sm', id: 'cancel-order', onclick: (ev) => cancel(ev.currentTarget) }, t('order.cancel')));
    mount(detail, parts);
  }

  function paymentBox(o) {
    const p = o.payment;
    return h('div', { class: 'total-row', id: 'order-payment', dataset: { status: p.status } },
      h('span', null, t('order.payment')),
      h('span', null, h('span', { class: `pill ${p.status}` }, t(`pay.status.${p.status}`)), ' ', money(p.amount, p.currency)));
  }

  function ticketState(x) {
    if (x.refunded_at) return 'refunded';
    if (x.revoked_at) return 'revoked';
    return x.used_at ? 'used' : 'valid';
  }

  function ticketList(tickets) {
    return h('ul', { class: 'order-tickets', id: 'order-tickets', 'aria-label': t('tickets.title') }, tickets.map((x) => {
      const state = ticketState(x);
      const seat = parseSeatId(x.seat_id);
      return h('li', { dataset: { ticketId: x.ticket_id, state } },
        h('span', null, `${t('event.section', { s: seat.section })} · ${t('hold.seat', { row: seat.row, num: seat.number })}`),
        state === 'valid' ? null : h('span', { class: `pill ${state === 'used' ? 'ok' : 'rejected'}` }, t(`ticket.state.${state}`)));
    }));
  }

  function refundList() {
    return h('section', { class: 'stack' }, h('h2', null, t('refund.title')),
      h('ul', { class: 'refund-list', id: 'order-refunds' }, refunds.map((r) =>
        h('li', { dataset: { refundId: r.id, status: r.status, kind: r.kind } },
          h('span', null, t(`refund.kind.${r.kind}`)),
          h('strong', null, money(r.amount, r.currency)),
          h('span', { class: `pill ${r.status}` }, t(`refund.status.${r.status}`)),
          r.refundedAt ? h('span', { class: 'muted small' }, dateLong(r.refundedAt)) : null))));
  }

  function cancellable() {
    if (status !== 'confirmed' || !order) return false;
    if (refunds.some((r) => r.kind === 'buyer_cancel')) return false;
    return order.tickets.length ? order.tickets.some((x) => !x.revoked_at) : order.refunded < order.total;
  }

  async function cancel(button) {
    if (!window.confirm(t('order.cancelConfirm'))) return;
    button.disabled = true;
    cancelError = null;
    try {
      const refund = normalizeRefund(await api.cancelOrder(orderId));
      if (!refunds.some((r) => r.id === refund.id)) refunds = [...refunds, refund];
      toast(t('order.cancelled'), 'ok', 4000);
      // The wallet on this device must stop showing these tickets as valid.
      syncTickets().catch(() => {});
    } catch (err) {
      if (err instanceof ApiError && err.code === 'refund_refused') cancelError = `${t('order.cancelRefused')} ${err.problem.detail || ''}`.trim();
      else cancelError = err instanceof OfflineError ? t('err.offline') : err?.problem?.detail || err?.message || t('err.generic');
    }
    renderStatus();
    clearTimeout(pollTimer);
    pollDelay = 700;
    poll();
  }

  // The money is on its way back while a refund is requested (the payments worker pays it).
  function settling() {
    return refunds.some((r) => r.status === 'requested') || order?.payment?.status === 'refunding';
  }

  async function poll() {
    if (disposed) return;
    try {
      order = await fetchOrder(orderId);
      if (order.status === 'confirmed') {
        const body = await api.refunds(orderId).catch(() => null);
        if (body) refunds = (Array.isArray(body) ? body : body.items || []).map(normalizeRefund);
      }
      if (disposed) return;
      // What the API knows beats what this device remembered (or did not).
      record = {
        ...(record || {}),
        seats: order.seats.map((x) => (typeof x === 'object' ? x.seat_id : x)),
        total: order.total ?? record?.total,
        currency: order.currency || record?.currency,
      };
      if (order.status !== 'pending') await orderStatusChanged(orderId, order.status, order.reason);
      update(order.status, order.reason);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404 && status === 'pending') {
        // The persister may not have written it yet; keep waiting.
      } else if (!(err instanceof OfflineError) && !(err instanceof ApiError)) throw err;
    }
    if ((status === 'pending' || settling()) && !disposed) {
      pollDelay = Math.min(5000, pollDelay * 1.4);
      pollTimer = setTimeout(poll, pollDelay);
    }
  }

  function update(next, why) {
    status = next === 'confirmed' || next === 'rejected' ? next : 'pending';
    reason = why || reason;
    renderStatus();
  }

  function onStatus(ev) {
    if (ev.detail.orderId !== orderId) return;
    update(ev.detail.status, ev.detail.reason);
  }
  window.addEventListener('tb:order-status', onStatus);
  const onOnline = () => { clearTimeout(pollTimer); pollDelay = 700; poll(); };
  window.addEventListener('online', onOnline);

  savedOrder(orderId).then((saved) => {
    record = saved || null;
    if (record?.status) update(record.status, record.reason);
    else renderStatus();
    poll();
  });

  return () => {
    disposed = true;
    clearTimeout(pollTimer);
    window.removeEventListener('tb:order-status', onStatus);
    window.removeEventListener('online', onOnline);
  };
}
