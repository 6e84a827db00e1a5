// The connection form, built from the provider's SimplifiedJSONSchema maps (reference §5.1):
// `connection_config` fields travel as `params[...]`, `credentials` fields as the JSON body.

import { externalLink, h, safeUrl } from './dom.js';

// What end users type when the provider entry declares no credential fields.
const DEFAULT_CREDENTIALS = {
  API_KEY: { apiKey: { title: 'API Key', secret: true } },
  BASIC: {
    username: { title: 'Username' },
    password: { title: 'Password', secret: true },
  },
  OAUTH2_CC: {
    client_id: { title: 'Client ID' },
    client_secret: { title: 'Client Secret', secret: true },
  },
  TBA: {
    token_id: { title: 'Token ID' },
    token_secret: { title: 'Token Secret', secret: true },
  },
  SIGNATURE: {
    username: { title: 'Username' },
    password: { title: 'Password', secret: true },
  },
  AWS_SIGV4: {
    role_arn: { title: 'Role ARN', example: 'arn:aws:iam::123456789012:role/example' },
    region: { title: 'Region', optional: true, example: 'us-east-1' },
  },
};

const FORMATS = {
  email: { test: (v) => /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v), message: 'Enter an email address, like name@example.com.' },
  hostname: {
    test: (v) => /^(?=.{1,253}$)[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(v),
    message: 'Enter a host name, like example.com, without https:// or a path.',
  },
  uri: { test: (v) => safeUrl(v) !== null, message: 'Enter a full URL, starting with https://.' },
  uuid: {
    test: (v) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v),
    message: 'Enter an ID of the form 123e4567-e89b-12d3-a456-426614174000.',
  },
};

let nextId = 0;

function schemaMap(value) {
  return value && typeof value === 'object' && !Array.isArray(value) ? value : {};
}

function text(value) {
  return typeof value === 'string' && value.trim() ? value.trim() : '';
}

/**
 * The fields of the form, in display order. `preset` holds connection_config values the session already sets
 * (integrations_config_defaults): those are not asked for.
 */
export function fieldsFor(provider, preset) {
  const credentials = Object.keys(schemaMap(provider.credentials)).length
    ? schemaMap(provider.credentials)
    : DEFAULT_CREDENTIALS[provider.auth_mode] || {};
  const groups = [
    ['params', schemaMap(provider.connection_config)],
    ['credentials', credentials],
  ];
  const fields = [];
  for (const [group, schemas] of groups) {
    for (const [name, raw] of Object.entries(schemas)) {
      const schema = schemaMap(raw);
      const presetValue = group === 'params' && preset && typeof preset[name] === 'string' ? preset[name] : null;
      fields.push({ name, group, schema, position: fields.length, presetValue });
    }
  }
  const order = (field) => (Number.isFinite(field.schema.order) ? field.schema.order : Number.MAX_SAFE_INTEGER);
  return fields.sort((a, b) => order(a) - order(b) || a.position - b.position);
}

/** A field the end user does not see: filled by the platform (automated), hidden, or preset by the session. */
function isSilent(field) {
  return Boolean(field.schema.automated || field.schema.hidden || field.presetValue !== null);
}

/** The value as submitted: trimmed, with a typed-in prefix (https://) or suffix (.example.com) removed. */
function normalized(raw, schema) {
  let value = raw.trim();
  const prefix = text(schema.prefix);
  const suffix = text(schema.suffix);
  if (prefix && value.toLowerCase().startsWith(prefix.toLowerCase())) value = value.slice(prefix.length);
  if (suffix && value.toLowerCase().endsWith(suffix.toLowerCase())) value = value.slice(0, -suffix.length);
  return value;
}

function compiledPattern(pattern) {
  if (typeof pattern !== 'string' || !pattern) return null;
  try {
    return new RegExp(pattern);
  } catch {
    return null;
  }
}

/** Why `value` is not acceptable for the field, or null. */
function problemWith(value, field, title) {
  const { schema } = field;
  if (!value) return schema.optional ? null : `${title} is required.`;
  const format = FORMATS[schema.format];
  if (format && !format.test(value)) return format.message;
  const pattern = compiledPattern(schema.pattern);
  if (pattern && !pattern.test(value)) {
    const example = text(schema.example);
    return `${title} is not in the expected format.${example ? ` For example: ${example}` : ''}`;
  }
  if (Array.isArray(schema.enum) && schema.enum.length && !schema.enum.includes(value)) {
    return `Choose one of the listed values for ${title}.`;
  }
  return null;
}

function docLink(docsUrl, section) {
  const anchor = text(section);
  if (!docsUrl || !anchor) return null;
  const href = anchor.startsWith('#') ? `${docsUrl.split('#')[0]}${anchor}` : safeUrl(anchor, docsUrl);
  return href ? externalLink(href, 'Where do I find this?', { class: 'doc-link' }) : null;
}

function inputFor(field, id, describedBy) {
  const { schema } = field;
  const common = {
    id,
    name: `${field.group}.${field.name}`,
    'aria-describedby': describedBy.join(' ') || undefined,
    required: !schema.optional,
  };
  if (Array.isArray(schema.enum) && schema.enum.length) {
    const options = schema.enum.map((option) => h('option', { value: String(option) }, String(option)));
    if (schema.optional) options.unshift(h('option', { value: '' }, '—'));
    const select = h('select', common, options);
    if (schema.default_value !== undefined) select.value = String(schema.default_value);
    return select;
  }
  const type = schema.secret ? 'password' : schema.format === 'email' ? 'email' : 'text';
  const input = h('input', {
    ...common,
    type,
    placeholder: text(schema.example) || undefined,
    autocomplete: 'off',
    autocapitalize: 'off',
    spellcheck: 'false',
    inputmode: schema.format === 'uri' ? 'url' : undefined,
  });
  if (typeof schema.default_value === 'string' || typeof schema.default_value === 'number') {
    input.value = String(schema.default_value);
  }
  return input;
}

/** One visible field: its markup plus validate()/value()/clear(). */
function renderField(field, docsUrl) {
  const { schema } = field;
  const id = `field-${nextId++}`;
  const title = text(schema.title) || field.name;
  const describedBy = [];
  const parts = [];

  const description = text(schema.description);
  const hint = description ? h('p', { class: 'hint', id: `${id}-hint` }, description) : null;
  if (hint) describedBy.push(hint.id);

  const prefix = text(schema.prefix);
  const suffix = text(schema.suffix);
  const prefixElement = prefix ? h('span', { class: 'affix', id: `${id}-prefix` }, prefix) : null;
  const suffixElement = suffix ? h('span', { class: 'affix', id: `${id}-suffix` }, suffix) : null;
  if (prefixElement) describedBy.push(prefixElement.id);
  if (suffixElement) describedBy.push(suffixElement.id);

  const error = h('p', { class: 'error-text', id: `${id}-error`, hidden: true });
  describedBy.push(error.id);

  const input = inputFor(field, id, describedBy);
  const group = h('div', { class: 'group' }, prefixElement, input, suffixElement);
  if (schema.secret && input.tagName === 'INPUT') {
    const reveal = h('button', { type: 'button', class: 'reveal', 'aria-controls': id, 'aria-pressed': 'false' }, 'Show');
    reveal.setAttribute('aria-label', `Show ${title}`);
    reveal.addEventListener('click', () => {
      const showing = input.type === 'text';
      input.type = showing ? 'password' : 'text';
      reveal.textContent = showing ? 'Show' : 'Hide';
      reveal.setAttribute('aria-pressed', String(!showing));
      reveal.setAttribute('aria-label', `${showing ? 'Show' : 'Hide'} ${title}`);
    });
    group.append(reveal);
  }

  parts.push(
    h('label', { for: id }, title, schema.optional ? h('span', { class: 'optional' }, ' (optional)') : null),
    hint,
    group,
    error,
    docLink(docsUrl, schema.doc_section),
  );
  const element = h('div', { class: 'field' }, parts);

  function showProblem(problem) {
    error.textContent = problem || '';
    error.hidden = !problem;
    group.classList.toggle('invalid', Boolean(problem));
    if (problem) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }
  input.addEventListener('input', () => {
    if (!error.hidden) showProblem(null);
  });

  return {
    field,
    element,
    input,
    value: () => normalized(input.value, schema),
    validate() {
      const problem = element.hidden ? null : problemWith(normalized(input.value, schema), field, title);
      showProblem(problem);
      return problem;
    },
    clearSecret() {
      if (schema.secret) input.value = '';
    },
  };
}

/**
 * Builds the form. `onSubmit({params, credentials})` runs when every visible field is valid.
 * Returns {element, fields: visible field count, focusFirst()}.
 */
export function buildForm({ provider, preset, docsUrl, submitLabel, onSubmit }) {
  const all = fieldsFor(provider, preset);
  const rendered = all.filter((field) => !isSilent(field)).map((field) => renderField(field, docsUrl));
  const byKey = new Map(rendered.map((entry) => [`${entry.field.group}.${entry.field.name}`, entry]));
  const byName = new Map(rendered.map((entry) => [entry.field.name, entry]));

  // visible_when: {field, equals} shows a field only while another field has that value
  function refreshVisibility() {
    for (const entry of rendered) {
      const rule = entry.field.schema.visible_when;
      if (!rule || typeof rule !== 'object') continue;
      const other = byName.get(rule.field);
      entry.element.hidden = Boolean(other) && other.value() !== String(rule.equals);
    }
  }
  for (const entry of rendered) entry.input.addEventListener('input', refreshVisibility);
  for (const entry of rendered) entry.input.addEventListener('change', refreshVisibility);
  refreshVisibility();

  const submit = h('button', { type: 'submit', class: 'primary' }, submitLabel);
  const form = h('form', { novalidate: true }, rendered.map((entry) => entry.element), submit);

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const invalid = rendered.filter((entry) => entry.validate() !== null);
    if (invalid.length) {
      invalid[0].input.focus();
      return;
    }
    const params = {};
    const credentials = {};
    for (const field of all) {
      let value;
      if (field.presetValue !== null) continue; // the server applies the session's own values
      if (field.schema.automated) continue;
      if (field.schema.hidden) {
        if (field.schema.default_value === undefined) continue;
        value = String(field.schema.default_value);
      } else {
        const entry = byKey.get(`${field.group}.${field.name}`);
        if (entry.element.hidden) continue;
        value = entry.value();
        if (!value) continue;
      }
      (field.group === 'params' ? params : credentials)[field.name] = value;
    }
    onSubmit({ params, credentials });
  });

  return {
    element: form,
    visibleFields: rendered.length,
    submitButton: submit,
    focusFirst() {
      (rendered[0]?.input || submit).focus();
    },
    clearSecrets() {
      for (const entry of rendered) entry.clearSecret();
    },
  };
}
