// The dashboard page: plain DOM, no inline code (the page's CSP allows
// scripts and styles from this server only), no third-party assets.
'use strict';

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;
const session = { key: store.getItem('ps.key') || '', token: store.getItem('ps.token') || '' };
let feed = null; // the live feed's AbortController

function keyHeaders() {
  return session.key ? { 'X-API-Key': session.key } : {};
}

async function detail(resp) {
  try {
    const body = await resp.json();
    if (typeof body.detail === 'string') return body.detail;
    if (body.error_description) return body.error_description;
  } catch (_) { /* not JSON */ }
  return `HTTP ${resp.status}`;
}

async function api(path, extra) {
  const resp = await fetch(path, { headers: { ...keyHeaders(), ...(extra || {}) } });
  if (!resp.ok) throw new Error(await detail(resp));
  return resp.json();
}

function text(el, value) { el.textContent = value; return el; }
function el(tag, value, cls) {
  const node = document.createElement(tag);
  if (value !== undefined) node.textContent = value;
  if (cls) node.className = cls;
  return node;
}
const integer = (n) => Number(n).toLocaleString('en-US', { maximumFractionDigits: 0 });
const money = (n) => Number(n).toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 6 });

// ---------------------------------------------------------------- sign in

async function signIn(event) {
  event.preventDefault();
  const key = $('api-key').value.trim();
  const email = $('email').value.trim();
  const password = $('password').value;
  const error = $('signin-error');
  text(error, '');
  session.key = key;
  session.token = '';
  try {
    let who = key ? 'API key' : 'no key';
    if (email || password) {
      // The OAuth2 password grant; the key is the client secret.
      const form = new URLSearchParams({ grant_type: 'password', username: email, password });
      if (key) form.set('client_secret', key);
      const resp = await fetch('/auth/token', {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: form,
      });
      if (!resp.ok) throw new Error(await detail(resp));
      session.token = (await resp.json()).access_token;
      const profile = await api('/auth/profile', { Authorization: `Bearer ${session.token}` });
      who = profile.email;
    }
    // The key must also read analytics.
    await api('/analytics/summary');
    store.setItem('ps.key', session.key);
    store.setItem('ps.token', session.token);
    store.setItem('ps.who', who);
    $('password').value = '';
    show();
  } catch (e) {
    session.key = '';
    session.token = '';
    text(error, `Sign-in failed: ${e.message}`);
    $('api-key').focus();
  }
}

function signOut() {
  if (feed) feed.abort();
  feed = null;
  store.clear();
  session.key = '';
  session.token = '';
  $('board').hidden = true;
  $('signout').hidden = true;
  $('signin').hidden = false;
  text($('who'), '');
  $('api-key').focus();
}

function show() {
  $('signin').hidden = true;
  $('board').hidden = false;
  $('signout').hidden = false;
  text($('who'), `Signed in: ${store.getItem('ps.who') || 'API key'}`);
  load();
  follow(null);
}

// -------------------------------------------------------------- dashboard

function hours() { return Number($('range').value) || 24; }

async function load(event) {
  if (event) event.preventDefault();
  text($('board-error'), '');
  try {
    const d = await api(`/analytics/dashboard?hours=${hours()}`);
    stat('stat-events', d.total_events, integer);
    stat('stat-users', d.active_users, integer);
    stat('stat-calls', d.total_api_calls, integer);
    stat('stat-cost', d.total_cost, money);
    types(d.event_types, d.total_events);
    endpoints(d.top_endpoints);
    chart(d.hourly);
    text($('loaded'), `Updated ${new Date().toISOString().slice(11, 19)} UTC`);
    document.body.dataset.loaded = String(Date.now());
  } catch (e) {
    text($('board-error'), `Could not load the dashboard: ${e.message}`);
  }
}

function stat(id, value, format) {
  const node = $(id);
  node.dataset.value = String(value);
  text(node, format(value));
}

function types(list, total) {
  const body = $('types').tBodies[0];
  body.replaceChildren();
  for (const t of list) {
    const row = el('tr');
    row.dataset.type = t.event_type;
    row.append(el('td', t.event_type), el('td', integer(t.count), 'num'));
    const share = el('td');
    const pct = total > 0 ? (100 * t.count) / total : 0;
    const meter = el('meter');
    meter.min = 0; meter.max = 100; meter.value = pct;
    meter.setAttribute('aria-label', `${t.event_type}: ${pct.toFixed(1)}% of events`);
    share.append(meter, document.createTextNode(` ${pct.toFixed(1)}%`));
    row.append(share);
    body.append(row);
  }
  if (!list.length) body.append(emptyRow(3));
}

function endpoints(list) {
  const body = $('endpoints').tBodies[0];
  body.replaceChildren();
  for (const e of list) {
    const row = el('tr');
    row.append(el('td', e.endpoint), el('td', integer(e.count), 'num'));
    body.append(row);
  }
  if (!list.length) body.append(emptyRow(2));
}

function emptyRow(span) {
  const row = el('tr');
  const cell = el('td', 'Nothing in this range', 'hint');
  cell.colSpan = span;
  row.append(cell);
  return row;
}

const SVG = 'http://www.w3.org/2000/svg';
function chart(buckets) {
  const box = $('hourly-chart');
  const width = 600, height = 160, base = 145;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  const total = buckets.reduce((s, b) => s + b.count, 0);
  const peak = Math.max(1, ...buckets.map((b) => b.count));
  svg.setAttribute('aria-label', `${integer(total)} events over ${buckets.length} hours; busiest hour ${integer(peak)}`);
  const w = width / Math.max(1, buckets.length);
  buckets.forEach((b, i) => {
    const h = (b.count / peak) * (base - 10);
    const bar = document.createElementNS(SVG, 'rect');
    bar.setAttribute('x', String(i * w));
    bar.setAttribute('y', String(base - h));
    bar.setAttribute('width', String(Math.max(0.5, w - 1)));
    bar.setAttribute('height', String(h));
    const tip = document.createElementNS(SVG, 'title');
    tip.textContent = `${b.start.slice(0, 13).replace('T', ' ')}:00 UTC: ${integer(b.count)}`;
    bar.append(tip);
    svg.append(bar);
  });
  for (const [i, anchor] of [[0, 'start'], [buckets.length - 1, 'end']]) {
    if (!buckets[i]) continue;
    const label = document.createElementNS(SVG, 'text');
    label.setAttribute('x', String(anchor === 'start' ? 0 : width));
    label.setAttribute('y', String(height - 2));
    label.setAttribute('text-anchor', anchor);
    label.textContent = buckets[i].start.slice(5, 13).replace('T', ' ') + 'h';
    svg.append(label);
  }
  box.replaceChildren(svg);
  box.dataset.total = String(total);
}

async function userActivity(event) {
  event.preventDefault();
  const id = Number($('user-id').value);
  const body = $('user-events').tBodies[0];
  body.replaceChildren();
  if (!Number.isInteger(id) || id < 1) {
    text($('user-summary'), 'Enter a user id (a whole number from 1).');
    return;
  }
  const from = new Date(Date.now() - hours() * 3600e3).toISOString();
  try {
    const page = await api(`/analytics/users/${id}/events?limit=50&from=${encodeURIComponent(from)}`);
    for (const e of page.events) {
      const row = el('tr');
      row.append(el('td', e.timestamp.slice(0, 19).replace('T', ' ')), el('td', e.event_type), el('td', e.session_id || '–'));
      body.append(row);
    }
    const more = page.next_cursor ? ' (the newest 50 shown)' : '';
    text($('user-summary'), `User ${id}: ${page.count} events in this range${more}`);
    $('user-summary').dataset.count = String(page.count);
  } catch (e) {
    text($('user-summary'), `Could not load user ${id}: ${e.message}`);
  }
}

// -------------------------------------------------------------- live feed

// fetch() rather than EventSource, which cannot send the API key header.
async function follow(lastId) {
  if (feed) feed.abort();
  const control = new AbortController();
  feed = control;
  const status = $('feed-status');
  const headers = keyHeaders();
  if (lastId !== null) headers['Last-Event-ID'] = String(lastId);
  let retry = 2000;
  try {
    const resp = await fetch('/analytics/events/stream', { headers, signal: control.signal });
    if (!resp.ok) throw new Error(await detail(resp));
    text(status, 'live');
    status.dataset.state = 'live';
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const msg = { id: null, event: 'message', data: '' };
        for (const line of block.split('\n')) {
          const at = line.indexOf(':');
          if (at === 0) continue;
          const field = at < 0 ? line : line.slice(0, at);
          const val = at < 0 ? '' : line.slice(at + 1).replace(/^ /, '');
          if (field === 'id') msg.id = Number(val);
          else if (field === 'event') msg.event = val;
          else if (field === 'data') msg.data += val;
          else if (field === 'retry') retry = Number(val) || retry;
        }
        if (msg.id !== null) lastId = msg.id;
        if (msg.event === 'message' && msg.data) arrived(JSON.parse(msg.data));
        else if (msg.event === 'dropped') retry = 0;
      }
    }
  } catch (e) {
    if (control.signal.aborted) return;
    text(status, `disconnected: ${e.message}`);
  }
  if (control.signal.aborted) return;
  status.dataset.state = 'reconnecting';
  text(status, 'reconnecting');
  setTimeout(() => { if (feed === control) follow(lastId); }, retry);
}

function arrived(e) {
  const list = $('feed');
  const item = el('li');
  item.dataset.id = String(e.id);
  item.append(
    el('span', e.event_type, 'type'),
    document.createTextNode(` · ${e.user_id ? `user ${e.user_id}` : 'no user'} · ${e.timestamp.slice(11, 19)} UTC · #${e.id}`),
  );
  list.prepend(item);
  while (list.children.length > 50) list.lastElementChild.remove();
}

document.addEventListener('DOMContentLoaded', () => {
  $('signin-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  $('range-form').addEventListener('submit', load);
  $('range').addEventListener('change', () => load());
  $('user-form').addEventListener('submit', userActivity);
  if (store.getItem('ps.who')) show();
  else $('api-key').focus();
});
