// Drives the official @nangohq/node SDK for the Python compat tests: one JSON request per stdin line,
// one JSON answer per stdout line. Axios responses (proxy, delete...) are reduced to {status, data, headers}.
import { Nango } from '@nangohq/node';
import readline from 'node:readline';

const [host, secretKey] = process.argv.slice(2);
const clients = new Map();
function client(key) {
    const k = key || secretKey;
    if (!clients.has(k)) clients.set(k, new Nango({ host, secretKey: k }));
    return clients.get(k);
}

function plain(value) {
    if (value && typeof value === 'object' && 'status' in value && 'headers' in value && 'data' in value && 'config' in value) {
        return { status: value.status, data: value.data, headers: Object.fromEntries(Object.entries(value.headers)) };
    }
    return value;
}

// Routes the 0.71 SDK has no method for (e.g. POST /connections), sent through the SDK's own
// axios instance and headers, as a customer's code would.
const extras = {
    async _importConnection(nango, body) {
        const url = `${nango.serverUrl}/connections`;
        const response = await nango.http.post(url, body, { headers: nango.enrichHeaders({ 'Content-Type': 'application/json' }) });
        return response.data;
    },
    // PUT /environment-variables (ours: Nango sets them in its dashboard)
    async _setEnvironmentVariables(nango, variables) {
        const url = `${nango.serverUrl}/environment-variables`;
        const response = await nango.http.put(url, variables, { headers: nango.enrichHeaders({ 'Content-Type': 'application/json' }) });
        return response.data;
    },
    // GET (no body) or PATCH /environment/webhook-settings (Nango sets them in its dashboard)
    async _webhookSettings(nango, changes) {
        const url = `${nango.serverUrl}/environment/webhook-settings`;
        const headers = nango.enrichHeaders({ 'Content-Type': 'application/json' });
        const response = changes ? await nango.http.patch(url, changes, { headers }) : await nango.http.get(url, { headers });
        return response.data;
    },
    // What a customer's receiver does with a webhook: the SDK's checks, with the environment's signing key
    async _verifyIncomingWebhookRequest(_nango, rawBody, headers, webhookSigningKey) {
        return new Nango({ host, secretKey, webhookSigningKey }).verifyIncomingWebhookRequest(rawBody, headers);
    },
    async _verifyWebhookSignature(_nango, signature, payload, webhookSigningKey) {
        return new Nango({ host, secretKey, webhookSigningKey }).verifyWebhookSignature(signature, payload);
    },
};

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
    const { id, method, args, key } = JSON.parse(line);
    let answer;
    try {
        const nango = client(key);
        const result = method in extras ? await extras[method](nango, ...(args || [])) : await nango[method](...(args || []));
        answer = { id, ok: true, result: plain(result) ?? null };
    } catch (error) {
        answer = {
            id,
            ok: false,
            status: error.response?.status ?? null,
            data: error.response?.data ?? null,
            message: String(error.message || error),
        };
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
}
