// Building elements without innerHTML: every value reaches the page as text or as a checked attribute.

/**
 * h('button', {class: 'primary', type: 'submit', onclick: fn}, 'Connect')
 * Attributes set to undefined, null or false are left out; true sets a boolean attribute.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      element.className = value;
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** The URL when it is an absolute http(s) URL, else null: never a javascript: or data: link. */
export function safeUrl(value, base) {
  if (typeof value !== 'string' || value.length === 0) return null;
  try {
    const url = base ? new URL(value, base) : new URL(value);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
  } catch {
    return null;
  }
}

/** A link that opens in a new tab without giving that tab a handle on this one. */
export function externalLink(href, text, attributes = {}) {
  return h(
    'a',
    { href, target: '_blank', rel: 'noopener noreferrer', ...attributes },
    text,
    h('span', { class: 'visually-hidden' }, ' (opens in a new tab)'),
  );
}
