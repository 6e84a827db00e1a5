// The OAuth popup, with the protocol `@nangohq/frontend` uses (reference §4.3, §4.4): open the window on the
// click, open the websocket, wait for `connection_ack`, send the window to /oauth/connect with our
// `ws_client_id`, then take the outcome from the websocket. The callback page also postMessages its outcome to
// us (its opener); we answer `nango_oauth_callback_ack` so it closes itself.

const ACK_TIMEOUT_MS = 15000;
const POLL_MS = 500;
// when the window is seen closed, the websocket may still be delivering the outcome
const CLOSED_GRACE_MS = 1500;
// after the outcome, the callback page may still be posting its message: acknowledge it, then close the window
const SETTLE_MS = 500;

export class AuthFailure extends Error {
  constructor(type, message) {
    super(message);
    this.type = type;
  }
}

/** Opens the (blank) popup; must run inside the click handler or browsers block it. Null when blocked. */
export function openPopup(width = 500, height = 600) {
  const left = Math.max(window.screen.width / 2 - width / 2, 0);
  const top = Math.max(window.screen.height / 2 - height / 2, 0);
  const features = [
    `width=${Math.min(width, window.screen.width)}`,
    `height=${Math.min(height, window.screen.height)}`,
    `left=${left}`,
    `top=${top}`,
    'scrollbars=yes',
    'resizable=yes',
    'status=no',
    'toolbar=no',
    'location=no',
    'menubar=no',
  ].join(',');
  const popup = window.open('', '_blank', features);
  return popup && !popup.closed ? popup : null;
}

/**
 * Runs the flow in `popup`. Resolves {providerConfigKey, connectionId, isPending}; rejects AuthFailure.
 * `urlFor(wsClientId)` builds the /oauth/connect URL; `signal` cancels (the popup is closed).
 */
export function runPopupFlow({ popup, websocketUrl, urlFor, detectClosedWindow, signal }) {
  return new Promise((resolve, reject) => {
    let settled = false;
    let closedAt = 0;
    const socket = new WebSocket(websocketUrl);
    const ackTimer = setTimeout(
      () => fail('unknown_error', 'The server did not answer in time. Please try again.'),
      ACK_TIMEOUT_MS,
    );
    const poll = setInterval(watchWindow, POLL_MS);

    function cleanUp() {
      settled = true;
      clearTimeout(ackTimer);
      clearInterval(poll);
      signal?.removeEventListener('abort', onAbort);
      if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) socket.close();
      window.setTimeout(() => {
        window.removeEventListener('message', onWindowMessage);
        closeQuietly(popup);
      }, SETTLE_MS);
    }

    function fail(type, message) {
      if (settled) return;
      cleanUp();
      reject(new AuthFailure(type, message));
    }

    function succeed(result) {
      if (settled) return;
      cleanUp();
      resolve(result);
    }

    function onAbort() {
      fail('cancelled', 'Cancelled.');
      closeQuietly(popup);
    }

    function watchWindow() {
      if (!popup.closed) {
        closedAt = 0;
        return;
      }
      // Some providers' pages cut the link to the opener, making the window look closed while it is not:
      // only conclude when asked to (detectClosedAuthWindow), as the SDK does.
      if (!detectClosedWindow) return;
      closedAt ||= Date.now();
      if (Date.now() - closedAt >= CLOSED_GRACE_MS) {
        fail('window_closed', 'The authorization window was closed before the authorization flow was completed.');
      }
    }

    function onWindowMessage(event) {
      if (event.source !== popup || !event.data || typeof event.data !== 'object') return;
      const { type, payload } = event.data;
      if (type !== 'nango_oauth_callback_success' && type !== 'nango_oauth_callback_error') return;
      event.source.postMessage({ type: 'nango_oauth_callback_ack' }, event.origin);
      if (type === 'nango_oauth_callback_error') {
        const details = payload && typeof payload === 'object' ? payload : {};
        fail(
          typeof details.errorType === 'string' ? details.errorType : 'unknown_error',
          typeof details.message === 'string' && details.message ? details.message : 'The authorization failed.',
        );
      }
    }

    socket.addEventListener('message', (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      if (data.message_type === 'connection_ack' && typeof data.ws_client_id === 'string') {
        clearTimeout(ackTimer);
        if (popup.closed) {
          fail('blocked_by_browser', 'The authorization window was closed or blocked by the browser.');
          return;
        }
        popup.location = urlFor(data.ws_client_id);
      } else if (data.message_type === 'success') {
        succeed({
          providerConfigKey: data.provider_config_key,
          connectionId: data.connection_id,
          isPending: Boolean(data.is_pending),
        });
      } else if (data.message_type === 'error') {
        fail(data.error_type || 'unknown_error', data.error_desc || 'The authorization failed.');
      }
    });
    socket.addEventListener('close', () =>
      fail('unknown_error', 'The connection to the server was lost before the authorization finished.'),
    );

    window.addEventListener('message', onWindowMessage);
    signal?.addEventListener('abort', onAbort);
  });
}

function closeQuietly(popup) {
  try {
    if (popup && !popup.closed) popup.close();
  } catch {
    // a window of another origin may refuse; it is the user's to close then
  }
}
