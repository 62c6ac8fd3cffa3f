// My tickets: from IndexedDB first (works offline), then refreshed online.
import { api } from '../api.js';
import { currentUser, jwtClaims, getToken } from '../auth.js';
import { h, mount, toast } from '../dom.js';
import { dateLong, dateShort, getLang, money, t, zoneName } from '../i18n.js';
import { askPermission, notificationPermission } from '../notify.js';
import { savedTickets, syncTickets, ticketVoid } from '../wallet.js';

function qrImage(ticket) {
  // A refunded or revoked ticket shows no code at all: it would be refused at the gate.
  if (ticketVoid(ticket)) return h('span', { class: 'ticket-void', role: 'img', 'aria-label': t('tickets.void') }, t(ticket.refunded_at ? 'ticket.state.refunded' : 'ticket.state.revoked'), h('br'), t('tickets.notValid'));
  if (!ticket.qr_svg) return h('span', { class: 'muted small qr-pending' }, h('span', { class: 'spinner dark' }), h('br'), t('tickets.qrPending'));
  return h('img', {
    src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(ticket.qr_svg)}`,
    alt: t('tickets.qrAlt', { seat: ticket.seat_id }), width: 128, height: 128,
  });
}

// Where the confirmation e-mails (with the PDF tickets) go: PUT /me/contact.
function contactCard() {
  const email = h('input', { class: 'input', id: 'contact-email', type: 'email', required: true, maxlength: 254, autocomplete: 'email' });
  const lang = h('select', { class: 'input', id: 'contact-lang' }, h('option', { value: 'es' }, 'Español'), h('option', { value: 'en' }, 'English'));
  const status = h('span', { class: 'muted small', id: 'contact-status', role: 'status' });
  const save = h('button', { type: 'submit', class: 'btn btn-sm', id: 'contact-save' }, t('tickets.contactSave'));
  lang.value = getLang() === 'en' ? 'en' : 'es';
  api.contact().then((c) => {
    // None yet: offer the address the sign-in token carries, if any.
    email.value = c?.email || jwtClaims(getToken())?.email || '';
    if (c?.lang) lang.value = c.lang;
  }).catch(() => {});
  const form = h('form', { class: 'card stack', id: 'contact-form', onsubmit: async (ev) => {
    ev.preventDefault();
    save.disabled = true;
    try {
      await api.saveContact(email.value.trim(), lang.value);
      status.textContent = t('tickets.contactSaved');
      status.dataset.saved = 'true';
    } catch (err) {
      status.textContent = err.message || t('err.generic');
      status.dataset.saved = 'false';
    } finally {
      save.disabled = false;
    }
  } },
  h('h2', null, t('tickets.contactTitle')),
  h('p', { class: 'muted small' }, t('tickets.contactHelp')),
  h('div', { class: 'field' }, h('label', { for: 'contact-email' }, t('tickets.contactEmail')), email),
  h('div', { class: 'field' }, h('label', { for: 'contact-lang' }, t('tickets.contactLang')), lang),
  h('div', { class: 'row' }, save, status));
  return form;
}

function ticketCard(ticket) {
  const art = `art-${String(ticket.event_category || 'CONCERT').toUpperCase()}`;
  const state = ticket.refunded_at ? 'refunded' : ticket.revoked_at ? 'revoked' : 'valid';
  return h('article', { class: `ticket${state === 'valid' ? '' : ' revoked'}`, dataset: { ticketId: ticket.ticket_id, seat: ticket.seat_id, state } },
    h('div', { class: `ticket-top ${art}` },
      h('h3', null, ticket.event_title || `#${ticket.event_id}`),
      h('div', { class: 'small' }, [ticket.starts_at ? dateLong(ticket.starts_at) : null, ticket.venue].filter(Boolean).join(' · '))),
    h('div', { class: 'ticket-body' },
      h('div', { class: 'ticket-qr' }, qrImage(ticket)),
      h('dl', { class: 'ticket-facts' },
        h('dt', null, t('tickets.section')), h('dd', null, ticket.section),
        h('dt', null, t('tickets.row')), h('dd', null, ticket.row),
        h('dt', null, t('tickets.seat')), h('dd', null, String(ticket.number)),
        ticket.category ? [h('dt', null, t('event.zone')), h('dd', null, zoneName(ticket.category))] : null,
        ticket.price !== undefined && ticket.price !== null ? [h('dt', null, t('hold.total')), h('dd', null, money(ticket.price, ticket.currency))] : null,
        ticket.used_at ? [h('dt', null, t('tickets.used')), h('dd', null, dateLong(ticket.used_at))] : null,
        ticket.refunded_at ? [h('dt', null, t('ticket.state.refunded')), h('dd', null, dateShort(ticket.refunded_at))] : null)),
    h('div', { class: 'ticket-foot' },
      h('span', { class: 'ticket-id', title: ticket.ticket_id }, ticket.ticket_id),
      h('span', { class: 'spacer' }),
      ticket.token && state === 'valid' ? h('button', {
        type: 'button', class: 'btn btn-ghost btn-sm',
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(ticket.token);
            toast(t('tickets.copied'), 'ok', 2000);
          } catch {
            prompt(t('tickets.copy'), ticket.token);
          }
        },
      }, t('tickets.copy')) : null));
}

export function render(main) {
  const list = h('div', { class: 'ticket-grid', id: 'ticket-list', 'aria-live': 'polite' });
  const note = h('p', { class: 'notice', hidden: true }, t('tickets.offline'));
  const notifBtn = h('button', { type: 'button', class: 'btn btn-ghost btn-sm', id: 'notify-btn' }, t('tickets.notify'));
  const notifState = h('span', { class: 'muted small' });

  function showNotifState() {
    const perm = notificationPermission();
    notifBtn.hidden = perm !== 'default';
    notifState.textContent = perm === 'granted' ? t('tickets.notifyOn') : perm === 'denied' ? t('tickets.notifyDenied') : '';
  }
  notifBtn.addEventListener('click', async () => {
    await askPermission();
    showNotifState();
  });

  if (!currentUser()) {
    mount(main, h('div', { class: 'empty card' }, h('p', null, t('tickets.loginFirst')), h('a', { class: 'btn', href: '#/login' }, t('nav.login'))));
    sessionStorage.setItem('tb.returnTo', '#/tickets');
    return undefined;
  }

  mount(main,
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, t('tickets.title')), h('p', null, t('tickets.subtitle'))),
      h('span', { class: 'spacer' }), notifState, notifBtn),
    note, list, navigator.onLine === false ? null : contactCard());
  showNotifState();

  function show(tickets) {
    if (!tickets.length) {
      mount(list, h('div', { class: 'empty card' },
        h('p', null, t('tickets.empty')), h('a', { class: 'btn', href: '#/' }, t('tickets.browse'))));
      return;
    }
    mount(list, tickets.map(ticketCard));
  }

  let disposed = false;
  let retries = 0;
  let retryTimer = null;
  function refresh(saved) {
    syncTickets()
      .then((fresh) => {
        if (disposed) return;
        show(fresh);
        // Tickets are signed by a worker shortly after the order confirms.
        if (fresh.some((x) => !x.qr_svg && !ticketVoid(x)) && retries < 30) {
          retries += 1;
          retryTimer = setTimeout(() => refresh(fresh), 2000);
        }
      })
      .catch(() => {
        if (!disposed) {
          show(saved);
          note.hidden = false;
        }
      });
  }
  savedTickets().then((saved) => {
    if (disposed) return;
    if (saved.length || navigator.onLine === false) show(saved);
    note.hidden = navigator.onLine !== false;
    if (navigator.onLine !== false) refresh(saved);
  });
  const onTickets = () => savedTickets().then((x) => { if (!disposed) show(x); });
  window.addEventListener('tb:tickets', onTickets);
  return () => {
    disposed = true;
    clearTimeout(retryTimer);
    window.removeEventListener('tb:tickets', onTickets);
  };
}
