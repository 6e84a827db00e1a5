// Connect UI: load the connect session, let the end user pick an integration, fill in its form, connect, and
// tell the embedding page (`openConnectUI` of @nangohq/frontend) what happened.
//
// Events to the parent window, in the shapes the SDK forwards to `onEvent`:
//   {type: 'ready'}                                   once loaded; the parent answers {type: 'session_token', sessionToken}
//   {type: 'connect', payload: {providerConfigKey, connectionId, isPending?}}
//   {type: 'error', payload: {errorType, errorMessage}}
//   {type: 'close'}                                   Finish, the close button, Escape or a click outside

import { Api, ApiError, POPUP_MODES, supportsMode } from './api.js';
import { externalLink, h, safeUrl } from './dom.js';
import { buildForm } from './form.js';
import { AuthFailure, openPopup, runPopupFlow } from './popup.js';

const TOKEN_WAIT_MS = 10000;
const SEARCH_FROM = 7; // integrations listed before a search box helps
const HEX_COLOUR = /^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i;

const root = document.documentElement;
const query = new URLSearchParams(window.location.search);
const embedded = window.parent !== window;
const ui = {
  shell: document.querySelector('.shell'),
  card: document.getElementById('card'),
  view: document.getElementById('view'),
  back: document.getElementById('back'),
  close: document.getElementById('close'),
  backdrop: document.getElementById('backdrop'),
  live: document.getElementById('live'),
};

const state = {
  apiURL: null,
  api: null,
  token: null,
  generation: 0,
  session: null,
  integrations: [],
  integration: null,
  provider: null,
  form: null,
  busy: false,
  flow: null,
  tokenTimer: 0,
  parentOrigin: parentOriginGuess(),
};

// ---------------------------------------------------------------------------------------------------------------
// The parent window

function parentOriginGuess() {
  const origin = window.location.ancestorOrigins?.[0];
  return origin && origin !== 'null' ? origin : '*';
}

function tellParent(message) {
  if (embedded) window.parent.postMessage(message, state.parentOrigin);
}

function onParentMessage(event) {
  if (event.source !== window.parent) return;
  const data = event.data;
  if (!data || typeof data !== 'object' || data.type !== 'session_token') return;
  const token = data.sessionToken;
  if (typeof token !== 'string' || token.length === 0 || token.length > 512) return;
  state.parentOrigin = event.origin && event.origin !== 'null' ? event.origin : state.parentOrigin;
  if (token !== state.token) start(token);
}

function closeConnectUI() {
  cancelFlow();
  tellParent({ type: 'close' });
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering

function announce(text) {
  ui.live.textContent = '';
  window.setTimeout(() => {
    ui.live.textContent = text;
  }, 50);
}

/** Replaces the view; focuses its heading (or `focus`) so keyboard and screen reader users follow along. */
function show(children, { back = false, focus = null, busy = false } = {}) {
  ui.view.replaceChildren(...children.filter(Boolean));
  ui.back.hidden = !back;
  ui.card.setAttribute('aria-busy', String(busy));
  const target = focus || ui.view.querySelector('#view-title');
  target?.focus();
}

function title(text) {
  return h('h1', { id: 'view-title', tabindex: '-1' }, text);
}

function logo(url, small = false) {
  const src = safeUrl(url);
  if (!src) return null;
  const image = h('img', { class: small ? 'logo small' : 'logo', src, alt: '', width: 44, height: 44 });
  image.addEventListener('error', () => image.remove());
  return image;
}

function brand(text) {
  return h('div', { class: 'brand' }, logo(state.integration?.logo), title(text));
}

function displayName() {
  return state.integration?.display_name || state.provider?.display_name || state.integration?.unique_key || '';
}

function canChooseAnother() {
  return state.integrations.length > 1 && !state.session?.isReconnecting;
}

function showLoading(text) {
  show([h('div', { class: 'centered' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), title(text))], {
    busy: true,
  });
}

function showProblem(heading, message, code) {
  show([
    h(
      'div',
      { class: 'centered' },
      h('span', { class: 'badge failure', 'aria-hidden': 'true' }, '!'),
      title(heading),
      h('p', { class: 'message lead' }, message),
      code ? details([['Error code', code]]) : null,
    ),
  ]);
}

function details(rows) {
  const list = h('dl', {}, rows.flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
  return h('details', {}, h('summary', {}, 'Details'), list);
}

function applyTheme(theme) {
  if (theme === 'light' || theme === 'dark') root.dataset.theme = theme;
  else delete root.dataset.theme;
}

/** Black or white, whichever reads better on `hex`. */
function textOn(hex) {
  const full = hex.length === 4 ? `#${[...hex.slice(1)].map((c) => c + c).join('')}` : hex;
  const channel = (i) => {
    const value = parseInt(full.slice(1 + 2 * i, 3 + 2 * i), 16) / 255;
    return value <= 0.03928 ? value / 12.92 : ((value + 0.055) / 1.055) ** 2.4;
  };
  const luminance = 0.2126 * channel(0) + 0.7152 * channel(1) + 0.0722 * channel(2);
  return (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) ? '#0d1014' : '#ffffff';
}

function applySettings(settings) {
  if (!settings || typeof settings !== 'object') return;
  if (!query.get('theme')) applyTheme(settings.defaultTheme);
  for (const mode of ['light', 'dark']) {
    const colour = settings.theme?.[mode]?.primary;
    if (typeof colour !== 'string' || !HEX_COLOUR.test(colour)) continue;
    root.style.setProperty(`--primary-${mode}`, colour);
    root.style.setProperty(`--on-primary-${mode}`, textOn(colour));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Session and integrations

function sessionProblem(error) {
  if (error.code === 'unknown_connect_session_token') {
    return ['This link has expired', 'Connection links work for a limited time. Go back to the app and start again.'];
  }
  if (error.code === 'invalid_connect_session_token_format') {
    return ['This link is not valid', 'The session in this link is malformed. Go back to the app and start again.'];
  }
  if (error.code === 'network_error') return ['The server could not be reached', error.message];
  return ['Something went wrong', error.message];
}

async function start(token) {
  window.clearTimeout(state.tokenTimer);
  cancelFlow();
  const generation = ++state.generation;
  state.token = token;
  state.api = new Api(state.apiURL, token);
  state.form = null;
  showLoading('Loading…');
  let session;
  let integrations;
  try {
    [session, integrations] = await Promise.all([state.api.session(), state.api.integrations()]);
  } catch (error) {
    if (generation !== state.generation) return;
    const [heading, message] = sessionProblem(error);
    tellParent({ type: 'error', payload: { errorType: error.code || 'unknown_error', errorMessage: message } });
    showProblem(heading, message, error.code);
    return;
  }
  if (generation !== state.generation) return;
  state.session = session || {};
  state.integrations = Array.isArray(integrations) ? integrations : [];
  applySettings(state.session.connectUISettings);
  const allowed = state.session.allowed_integrations;
  if (state.integrations.length === 0) {
    showProblem(
      'Nothing to connect',
      'No integration is available for this session. Ask the app you came from to set one up.',
      null,
    );
  } else if (state.session.isReconnecting || state.integrations.length === 1) {
    const wanted = Array.isArray(allowed) && allowed.length === 1 ? allowed[0] : null;
    openIntegration(state.integrations.find((i) => i.unique_key === wanted) || state.integrations[0]);
  } else {
    showList();
  }
}

function showList() {
  cancelFlow();
  state.integration = null;
  state.provider = null;
  state.form = null;
  const items = state.integrations.map((integration) => {
    const name = integration.display_name || integration.unique_key;
    const button = h(
      'button',
      { type: 'button', class: 'integration', onclick: () => openIntegration(integration) },
      logo(integration.logo, true),
      h('span', { class: 'name' }, name),
      h('span', { class: 'chevron', 'aria-hidden': 'true' }, '›'),
    );
    return { item: h('li', {}, button), text: `${name} ${integration.provider}`.toLowerCase() };
  });
  const list = h('ul', { class: 'integrations', 'aria-labelledby': 'view-title' }, items.map((i) => i.item));
  const empty = h('p', { class: 'empty', hidden: true }, 'No integration matches your search.');
  let search = null;
  if (items.length >= SEARCH_FROM) {
    const input = h('input', { type: 'search', id: 'search', autocomplete: 'off', spellcheck: 'false' });
    input.addEventListener('input', () => {
      const needle = input.value.trim().toLowerCase();
      let shown = 0;
      for (const { item, text } of items) {
        item.hidden = Boolean(needle) && !text.includes(needle);
        if (!item.hidden) shown += 1;
      }
      empty.hidden = shown > 0;
    });
    search = h('div', { class: 'search' }, h('label', { for: 'search', class: 'visually-hidden' }, 'Search integrations'), input);
    input.placeholder = 'Search';
  }
  show([
    title('Choose an integration'),
    h('p', { class: 'lead' }, 'Select the service you want to connect.'),
    search,
    list,
    empty,
  ]);
}

async function openIntegration(integration) {
  state.integration = integration;
  state.provider = null;
  state.form = null;
  const generation = state.generation;
  showLoading(`Loading ${integration.display_name || integration.unique_key}…`);
  let provider;
  try {
    provider = await state.api.provider(integration.provider);
  } catch (error) {
    if (generation === state.generation) showFailure(error);
    return;
  }
  if (generation !== state.generation || state.integration !== integration) return;
  state.provider = provider;
  showForm();
}

// ---------------------------------------------------------------------------------------------------------------
// The form and the connection

function showForm() {
  const { integration, provider, session } = state;
  const key = integration.unique_key;
  const name = displayName();
  const mode = provider.auth_mode;
  if (!supportsMode(mode)) {
    showUnsupported(name, mode);
    return;
  }
  const reconnecting = Boolean(session.isReconnecting);
  const docsUrl = safeUrl(session.overrides?.[key]?.docs_connect) || safeUrl(provider.docs_connect);
  if (!state.form) {
    state.form = buildForm({
      provider,
      preset: session.integrations_config_defaults?.[key]?.connection_config,
      docsUrl,
      submitLabel: reconnecting ? 'Reconnect' : 'Connect',
      onSubmit: connect,
    });
  }
  const popup = POPUP_MODES.has(mode);
  let intro;
  if (popup) {
    intro = state.form.visibleFields
      ? `Fill in the details below, then sign in to ${name} in the window that opens.`
      : `A window will open where you sign in to ${name} and allow access.`;
  } else if (state.form.visibleFields) {
    intro = provider.proxy?.verification
      ? `Enter your ${name} details. They are checked with ${name} before the connection is saved.`
      : `Enter your ${name} details.`;
  } else {
    intro = `No credentials are needed to connect ${name}.`;
  }
  show(
    [
      brand(reconnecting ? `Reconnect ${name}` : `Connect ${name}`),
      h('p', { class: 'lead' }, intro),
      docsUrl ? h('p', { class: 'doc-link' }, externalLink(docsUrl, `How to connect ${name}`)) : null,
      state.form.element,
    ],
    { back: canChooseAnother() },
  );
}

function showUnsupported(name, mode) {
  const message = `${name} uses ${mode} authentication, which this server cannot set up from Connect UI.`;
  show(
    [
      h(
        'div',
        { class: 'centered' },
        h('span', { class: 'badge failure', 'aria-hidden': 'true' }, '!'),
        title(`${name} can't be connected here`),
        h('p', { class: 'message lead' }, message),
      ),
      canChooseAnother()
        ? h('div', { class: 'actions' }, h('button', { type: 'button', class: 'secondary', onclick: showList }, 'Choose another integration'))
        : null,
    ],
    { back: canChooseAnother() },
  );
}

function setBusy(busy) {
  state.busy = busy;
  const button = state.form?.submitButton;
  if (button) {
    button.disabled = busy;
    button.textContent = busy ? 'Connecting…' : state.session?.isReconnecting ? 'Reconnect' : 'Connect';
  }
  ui.card.setAttribute('aria-busy', String(busy));
  if (busy) announce(`Connecting ${displayName()}…`);
}

function cancelFlow() {
  if (state.flow) {
    state.flow.abort();
    state.flow = null;
  }
}

/** Runs in the form's submit handler: a user gesture, so the popup may open. */
async function connect({ params, credentials }) {
  if (state.busy || state.flow) return;
  const { integration, provider, session, api } = state;
  const key = integration.unique_key;
  const mode = provider.auth_mode;
  if (!POPUP_MODES.has(mode)) {
    setBusy(true);
    try {
      succeeded(await api.authorize(mode, key, params, credentials));
    } catch (error) {
      failed(error);
    } finally {
      setBusy(false);
    }
    return;
  }
  const popup = openPopup();
  if (!popup) {
    failed(new AuthFailure('blocked_by_browser', 'Your browser blocked the sign-in window. Allow pop-ups for this page, then try again.'));
    return;
  }
  const flow = new AbortController();
  state.flow = flow;
  showWaiting(flow);
  try {
    succeeded(
      await runPopupFlow({
        popup,
        websocketUrl: api.websocketUrl(session.websocketsPath),
        urlFor: (wsClientId) => api.popupUrl(key, params, wsClientId),
        detectClosedWindow: query.get('detectClosedAuthWindow') === 'true',
        signal: flow.signal,
      }),
    );
  } catch (error) {
    if (error instanceof AuthFailure && error.type === 'cancelled') {
      if (state.integration === integration) showForm();
      return;
    }
    failed(error);
  } finally {
    if (state.flow === flow) state.flow = null;
  }
}

function showWaiting(flow) {
  const name = displayName();
  show([
    brand(`Finish in the ${name} window`),
    h('div', { class: 'centered' }, h('span', { class: 'spinner', 'aria-hidden': 'true' })),
    h('p', { class: 'lead' }, `Sign in to ${name} and allow access in the window that opened. This page updates when you are done.`),
    h('div', { class: 'actions' }, h('button', { type: 'button', class: 'secondary', onclick: () => flow.abort() }, 'Cancel')),
  ]);
}

function succeeded(result) {
  const payload = { providerConfigKey: result.providerConfigKey, connectionId: result.connectionId };
  if (typeof result.isPending === 'boolean') payload.isPending = result.isPending;
  tellParent({ type: 'connect', payload });
  const name = displayName();
  const finish = h('button', { type: 'button', class: 'primary', onclick: finishUp }, 'Finish');
  show(
    [
      h(
        'div',
        { class: 'centered' },
        h('span', { class: 'badge success', 'aria-hidden': 'true' }, '✓'),
        title(`${name} is connected`),
        h('p', { class: 'lead' }, `Your ${name} account was connected. You can go back to the app.`),
      ),
      h('div', { class: 'actions' }, finish),
    ],
    { focus: finish },
  );
  announce(`${name} is connected.`);
}

function failed(error) {
  const type = error instanceof AuthFailure ? error.type : error.code || 'unknown_error';
  const message = error.message || 'The connection failed.';
  tellParent({ type: 'error', payload: { errorType: type, errorMessage: message } });
  showFailure(error);
}

function showFailure(error) {
  const name = displayName();
  const type = error instanceof AuthFailure ? error.type : error.code || 'unknown_error';
  const rows = [['Error code', type]];
  if (error instanceof ApiError && error.status) rows.push(['HTTP status', String(error.status)]);
  if (state.integration) rows.push(['Integration', state.integration.unique_key]);
  const retry = h('button', { type: 'button', class: 'primary', onclick: tryAgain }, 'Try again');
  show(
    [
      h(
        'div',
        { class: 'centered' },
        h('span', { class: 'badge failure', 'aria-hidden': 'true' }, '!'),
        title(name ? `Couldn't connect ${name}` : "Couldn't connect"),
        h('p', { class: 'message lead', id: 'failure-message' }, error.message || 'The connection failed.'),
        details(rows),
      ),
      h(
        'div',
        { class: 'actions' },
        retry,
        canChooseAnother()
          ? h('button', { type: 'button', class: 'secondary', onclick: showList }, 'Choose another integration')
          : null,
      ),
    ],
    { back: canChooseAnother() },
  );
  announce(`Couldn't connect ${name}. ${error.message || ''}`);
}

function tryAgain() {
  if (state.provider) {
    state.form?.clearSecrets();
    showForm();
  } else if (state.integration) {
    openIntegration(state.integration);
  } else {
    start(state.token);
  }
}

function finishUp() {
  if (embedded) {
    tellParent({ type: 'close' });
    return;
  }
  window.close();
  // a tab the user opened can't be closed by script: say so
  window.setTimeout(() => {
    if (!window.closed) {
      show([
        h(
          'div',
          { class: 'centered' },
          h('span', { class: 'badge success', 'aria-hidden': 'true' }, '✓'),
          title('All done'),
          h('p', { class: 'lead' }, 'You can close this window now.'),
        ),
      ]);
    }
  }, 200);
}

// ---------------------------------------------------------------------------------------------------------------
// Start

function resolveApiUrl() {
  const configured = safeUrl(root.dataset.apiUrl);
  const requested = query.get('apiURL');
  if (!requested) return configured;
  const url = safeUrl(requested);
  if (!url) {
    showProblem('This page was opened incorrectly', `apiURL must be an http(s) URL.`, 'invalid_host_url');
    return null;
  }
  if (configured && new URL(url).origin !== new URL(configured).origin) {
    showProblem(
      'This page was opened incorrectly',
      `This Connect UI works with the API at ${new URL(configured).origin}, but was opened with apiURL ${new URL(url).origin}.`,
      'invalid_host_url',
    );
    return null;
  }
  return url;
}

function boot() {
  applyTheme(query.get('theme'));
  if (embedded) {
    root.dataset.embedded = '';
    ui.backdrop.hidden = false;
    ui.close.hidden = false;
    ui.card.setAttribute('role', 'dialog');
    ui.card.setAttribute('aria-modal', 'true');
  }
  ui.close.addEventListener('click', closeConnectUI);
  ui.back.addEventListener('click', showList);
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && embedded) closeConnectUI();
  });
  ui.shell.addEventListener('click', (event) => {
    if (embedded && event.target === ui.shell && !state.busy && !state.flow) closeConnectUI();
  });

  state.apiURL = resolveApiUrl();
  if (!state.apiURL) return;

  const token = query.get('session_token');
  if (token) {
    // keep the token out of the history and of anything that reads the address bar
    const url = new URL(window.location.href);
    url.searchParams.delete('session_token');
    window.history.replaceState(null, '', url);
  }
  if (embedded) {
    window.addEventListener('message', onParentMessage);
    tellParent({ type: 'ready' });
  }
  if (token) {
    start(token);
  } else if (embedded) {
    state.tokenTimer = window.setTimeout(() => {
      const message = 'The page that opened Connect UI sent no session token.';
      tellParent({ type: 'error', payload: { errorType: 'missing_connect_session_token', errorMessage: message } });
      showProblem('No session', message, 'missing_connect_session_token');
    }, TOKEN_WAIT_MS);
  } else {
    showProblem(
      'This page needs a connection link',
      'Open Connect UI from the link the app gave you, or from the app itself.',
      'missing_connect_session_token',
    );
  }
}

boot();
