// In-app notifications (toasts) and, when the user allowed it, system
// notifications through the service worker.
import { toast } from './dom.js';

export function notificationsSupported() {
  return 'Notification' in window;
}

export function notificationPermission() {
  return notificationsSupported() ? Notification.permission : 'unsupported';
}

/** Ask once, from a user gesture. Returns the resulting permission. */
export async function askPermission() {
  if (!notificationsSupported()) return 'unsupported';
  if (Notification.permission !== 'default') return Notification.permission;
  try {
    return await Notification.requestPermission();
  } catch {
    return Notification.permission;
  }
}

/** Show a toast; also a system notification if allowed and the page is hidden. */
export async function notify(message, kind = 'info', { title = 'TicketBuster', url } = {}) {
  toast(message, kind, 6000);
  if (notificationPermission() !== 'granted' || document.visibilityState === 'visible') return;
  try {
    const reg = await navigator.serviceWorker?.getRegistration();
    if (reg) await reg.showNotification(title, { body: message, icon: '/icons/icon-192.png', badge: '/icons/icon-192.png', data: { url }, tag: url || message });
  } catch {
    // Notifications are a bonus; the toast already told the user.
  }
}
