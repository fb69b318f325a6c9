// The demo backend (/api/*) and what the app may read from a token.

/** Calls the demo backend; throws an Error carrying the server's {code, message}. */
export async function api(method, path, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw Object.assign(new Error('The server cannot be reached. Is it running?'), { code: 'NETWORK' });
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const message = data && data.message ? data.message : `${res.status} ${res.statusText}`;
    throw Object.assign(new Error(message), { code: (data && data.code) || String(res.status), status: res.status });
  }
  return data;
}

/** Reads the (unverified) claims of a participant token, for display only. */
export function peekToken(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      Array.from(atob(part), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''),
    );
    return JSON.parse(json);
  } catch {
    return null;
  }
}
