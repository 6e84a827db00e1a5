// The calls Connect UI makes to the API with the connect session token (reference §2.1, §3.1, §4.4).

/** A failed call: `code` is the API's error code (or network_error / unknown_error), `message` is for people. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Auth modes completed in a popup at /oauth/connect, with the result on the websocket. */
export const POPUP_MODES = new Set(['OAUTH1', 'OAUTH2', 'MCP_OAUTH2', 'MCP_OAUTH2_GENERIC', 'CUSTOM', 'APP']);

// Non-popup routes by auth mode, as `@nangohq/frontend` dispatches them.
const DIRECT_ROUTES = {
  API_KEY: '/api-auth/api-key/',
  BASIC: '/api-auth/basic/',
  OAUTH2_CC: '/oauth2/auth/',
  TBA: '/auth/tba/',
  JWT: '/auth/jwt/',
  BILL: '/auth/bill/',
  TWO_STEP: '/auth/two-step/',
  SIGNATURE: '/auth/signature/',
  AWS_SIGV4: '/auth/aws-sigv4/',
  NONE: '/auth/unauthenticated/',
};
// Modes whose body carries a `type` next to the fields, as the frontend SDK sends it.
const TYPED_BODIES = new Set(['JWT', 'TWO_STEP', 'SIGNATURE']);

export function supportsMode(mode) {
  return POPUP_MODES.has(mode) || Object.hasOwn(DIRECT_ROUTES, mode);
}

export class Api {
  constructor(apiURL, sessionToken) {
    this.base = apiURL.replace(/\/+$/, '');
    this.token = sessionToken;
  }

  session() {
    return this.#get('/connect/session');
  }

  integrations() {
    return this.#get('/integrations');
  }

  provider(name) {
    return this.#get(`/providers/${encodeURIComponent(name)}`);
  }

  /** POST the end user's credentials to the route of `mode`; resolves {providerConfigKey, connectionId}. */
  async authorize(mode, providerConfigKey, params, credentials) {
    const route = DIRECT_ROUTES[mode];
    const url = `${this.base}${route}${encodeURIComponent(providerConfigKey)}${this.#flowQuery(params)}`;
    const body = TYPED_BODIES.has(mode) ? { type: mode, ...credentials } : credentials;
    return this.#send(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  }

  /** Where the OAuth popup goes once the websocket gave us our id. */
  popupUrl(providerConfigKey, params, wsClientId) {
    const extra = `&ws_client_id=${encodeURIComponent(wsClientId)}`;
    return `${this.base}/oauth/connect/${encodeURIComponent(providerConfigKey)}${this.#flowQuery(params)}${extra}`;
  }

  /** The websocket URL: `websocketsPath` resolved against the API URL, http(s) -> ws(s), as the SDK does. */
  websocketUrl(websocketsPath) {
    const url = new URL(websocketsPath || '/', this.base);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.href;
  }

  #flowQuery(params) {
    const query = [`connect_session_token=${encodeURIComponent(this.token)}`];
    for (const [name, value] of Object.entries(params)) {
      query.push(`params[${encodeURIComponent(name)}]=${encodeURIComponent(value)}`);
    }
    return `?${query.join('&')}`;
  }

  async #get(path) {
    const body = await this.#send(this.base + path, {
      headers: { Authorization: `Bearer ${this.token}`, Accept: 'application/json' },
    });
    return body.data;
  }

  async #send(url, init) {
    let response;
    try {
      response = await fetch(url, { ...init, credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer' });
    } catch {
      throw new ApiError(0, 'network_error', `The server at ${this.base} could not be reached.`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON: a proxy's error page, for instance
    }
    if (!response.ok) {
      const error = body && typeof body === 'object' && body.error ? body.error : {};
      const code = typeof error.code === 'string' ? error.code : 'unknown_error';
      const message = typeof error.message === 'string' && error.message ? error.message : `The server answered ${response.status}.`;
      throw new ApiError(response.status, code, message);
    }
    if (body === null || typeof body !== 'object') {
      throw new ApiError(response.status, 'unknown_error', 'The server sent an unexpected answer.');
    }
    return body;
  }
}
