// DOM helpers shared by every screen: the element builder, the main view and
// the banner across the top of the page.

/** Creates an element; `attrs` keys starting with "on" become listeners. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class') {
      node.className = value;
    } else if (key === 'text') {
      node.textContent = value;
    } else if (key in node && typeof value !== 'string') {
      node[key] = value;
    } else {
      node.setAttribute(key, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** The element every screen renders into. */
export const view = document.getElementById('view');
const bannerEl = document.getElementById('banner');

// Attributes a banner may carry for tests and styling (data-kind, data-reason...).
const BANNER_KEYS = ['kind', 'reason', 'code', 'category'];

/** Shows a message across the top. kind: "error" | "info" | "warn". */
export function showBanner(text, kind = 'error', extra = {}) {
  for (const k of BANNER_KEYS) delete bannerEl.dataset[k];
  bannerEl.hidden = false;
  bannerEl.dataset.kind = kind;
  for (const [k, v] of Object.entries(extra)) if (BANNER_KEYS.includes(k)) bannerEl.dataset[k] = v;
  bannerEl.querySelector('.banner-text').textContent = text;
}

export function hideBanner() {
  bannerEl.hidden = true;
  bannerEl.querySelector('.banner-text').textContent = '';
  for (const k of BANNER_KEYS) delete bannerEl.dataset[k];
}

/** The `reason` the banner now shows, if any (e.g. "host-left"). */
export function bannerReason() {
  return bannerEl.dataset.reason;
}

bannerEl.querySelector('.banner-close').addEventListener('click', hideBanner);
