// Sign in: a simple form against the dev issuer locally; Authorization Code
// + PKCE against the configured OIDC provider otherwise.
import { currentUser, loadConfig, loginDev, loginOidc, logout } from '../auth.js';
import { h, mount, toast } from '../dom.js';
import { t } from '../i18n.js';
import { navigate } from '../app.js';

function returnTo() {
  const target = sessionStorage.getItem('tb.returnTo');
  sessionStorage.removeItem('tb.returnTo');
  return target && target.startsWith('#/') && target !== '#/login' ? target.slice(1) : '/';
}

export function render(main) {
  const user = currentUser();
  if (user) {
    mount(main, h('div', { class: 'card login-card stack' },
      h('h1', null, t('login.signedIn', { sub: user.sub })),
      h('p', { class: 'muted' }, user.roles.join(', ')),
      h('a', { class: 'btn', href: '#/tickets' }, t('nav.tickets')),
      h('button', { type: 'button', class: 'btn btn-ghost', id: 'logout', onclick: () => { logout(); navigate('/login'); } }, t('login.logout'))));
    return undefined;
  }
  const card = h('div', { class: 'card login-card stack' }, h('h1', null, t('login.title')), h('div', { class: 'skeleton' }));
  mount(main, card);
  loadConfig().then((cfg) => {
    if (cfg.auth_mode === 'oidc') {
      mount(card, h('h1', null, t('login.title')), h('p', { class: 'muted' }, t('login.oidcSubtitle')),
        h('button', { type: 'button', class: 'btn btn-accent', onclick: () => loginOidc(`#${returnTo()}`).catch((e) => toast(`${t('login.failed')} ${e.message}`, 'err')) }, t('login.oidc')));
      return;
    }
    const name = h('input', { class: 'input', id: 'login-name', name: 'username', autocomplete: 'username', required: true, value: localStorage.getItem('tb.lastSub') || '', maxlength: 64, pattern: '[A-Za-z0-9._@\\-]+' });
    const role = (value, label, checked) => h('label', { class: 'checkrow' }, h('input', { type: 'checkbox', name: 'roles', value, checked }), label);
    const org = h('input', { class: 'input', id: 'login-org', name: 'org', maxlength: 64, pattern: '[a-z0-9]+(-[a-z0-9]+)*', placeholder: 'default' });
    const error = h('div', { class: 'error-box', role: 'alert', hidden: true });
    const submit = h('button', { type: 'submit', class: 'btn btn-accent', id: 'login-submit' }, t('login.submit'));
    const form = h('form', { class: 'stack', onsubmit: async (ev) => {
      ev.preventDefault();
      const roles = [...form.querySelectorAll('input[name=roles]:checked')].map((x) => x.value);
      submit.disabled = true;
      error.hidden = true;
      try {
        const u = await loginDev(name.value.trim(), roles.length ? roles : ['buyer'], roles.includes('organizer') ? org.value.trim() || 'default' : undefined);
        localStorage.setItem('tb.lastSub', u.sub);
        toast(t('login.welcome', { sub: u.sub }), 'ok', 2500);
        navigate(returnTo());
      } catch (err) {
        error.textContent = `${t('login.failed')} ${err.message || ''}`;
        error.hidden = false;
      } finally {
        submit.disabled = false;
      }
    } },
    h('div', { class: 'field' }, h('label', { for: 'login-name' }, t('login.name')), name),
    h('fieldset', { class: 'field', style: { border: '0', padding: '0', margin: '0' } },
      h('legend', { class: 'small', style: { fontWeight: '700', color: '#4a4560', marginBottom: '4px' } }, t('login.roles')),
      h('div', { class: 'role-row' }, role('buyer', t('login.buyer'), true), role('scanner', t('login.scanner'), false), role('organizer', t('login.organizer'), false), role('admin', t('login.admin'), false))),
    h('div', { class: 'field' }, h('label', { for: 'login-org' }, t('login.org')), org),
    error, submit);
    mount(card, h('h1', null, t('login.title')), h('p', { class: 'muted' }, t('login.devSubtitle')), form);
    name.focus();
  });
  return undefined;
}
