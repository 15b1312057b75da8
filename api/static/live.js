// Live seat map: draws an event's seats once, then keeps them current from the
// server's WebSocket stream (a snapshot, then versioned deltas), and lets a
// logged-in buyer hold seats or general-admission tickets.
'use strict';

const EVENT_ID = decodeURIComponent(location.pathname.split('/')[2] || '');
const TOKEN_KEY = 'onsale.access';
const EMAIL_KEY = 'onsale.email';
const HOLD_KEY = `onsale.hold.${EVENT_ID}`; // so a reload still shows the hold and its countdown
const MAX_PER_HOLD = 100; // the API's limit per hold
const STATUSES = ['available', 'held', 'sold'];
const SVG_NS = 'http://www.w3.org/2000/svg';
const PITCH = 12; // seat spacing, SVG units
const SEAT = 10;
const GUTTER = 28; // room for row numbers
const MAX_SCALE = 2.2; // CSS px per SVG unit: a small hall must not draw fist-sized seats
const SILENCE_MS = 40000; // the server pings at least every 15 s; this much quiet is a dead link

const $ = (id) => document.getElementById(id);

const live = {
  event: null,
  socket: null,
  version: -1,
  synced: false, // false until a snapshot arrives, and again after a gap: deltas wait
  retries: 0,
  liveSince: 0,
  lastHeard: 0,
  seatEls: new Map(), // seat id -> <rect>: updates touch only the seats that changed
  status: new Map(), // seat id -> available | held | sold
  counts: new Map(), // seated section code -> {available, held, sold}, kept from seat changes
  summaries: new Map(), // seated section code -> its heading <text>
  gaCards: new Map(), // general section code -> its card
  selected: new Set(),
  inFlight: new Set(), // seats of the hold request awaiting its answer
  busy: false,
  mine: new Set(),
  hold: null,
  timer: 0,
  pending: null, // {body, key} of a hold that failed in transit: retrying it reuses the key
};
window.onsaleLive = live; // for tests and the console

// ------------------------------------------------------------------ helpers

function make(ns, tag, attrs, text) {
  const node = document.createElementNS(ns, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}
const svg = (tag, attrs = {}, text = '') => make(SVG_NS, tag, attrs, text);
const html = (tag, attrs = {}, text = '') => make('http://www.w3.org/1999/xhtml', tag, attrs, text);

function money(cents, currency) {
  const fmt = new Intl.NumberFormat(undefined, { style: 'currency', currency });
  return fmt.format(cents / 10 ** fmt.resolvedOptions().maximumFractionDigits);
}

function say(text, kind = 'info') {
  $('message').textContent = text;
  $('message').dataset.kind = kind;
}

// crypto.randomUUID exists only in secure contexts; plain http still needs keys.
function uuid4() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// Only calls that need it carry the token: public reads answer 401 to an
// expired token rather than treat the caller as anonymous.
async function api(method, path, { body, auth = false, headers = {} } = {}) {
  const h = { Accept: 'application/json', ...headers };
  if (auth) h.Authorization = `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers: h, body: body && JSON.stringify(body) });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (res.status === 401 && auth) setLoggedIn(null);
  if (!res.ok) {
    const problem = data || {}; // application/problem+json
    throw Object.assign(new Error(problem.detail || problem.title || `HTTP ${res.status}`), { status: res.status, problem });
  }
  return data;
}

// ------------------------------------------------------------------ drawing

function drawEvent(event) {
  const when = new Date(event.starts_at).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  const status = event.status === 'on_sale' ? '' : ` · ${event.status.replace('_', ' ')}`;
  $('event-name').textContent = event.name;
  $('event-meta').textContent = `${event.venue} · ${when}${status}`;
  document.title = `${event.name} · live seat map`;
  drawSeats(event.sections.filter((s) => s.kind === 'seated'), event.currency);
  for (const s of event.sections) if (s.kind === 'general') drawGa(s, event.currency);
}

// Built once, off-document, in one pass; afterwards see setSeat.
function drawSeats(sections, currency) {
  if (!sections.length) return;
  const widest = Math.max(...sections.map((s) => s.seats_per_row));
  const width = Math.max(2 * GUTTER + widest * PITCH, 280); // room for the section headings
  const left = (width - widest * PITCH) / 2;
  const root = svg('svg', { role: 'group', 'aria-label': 'Seat map', class: 'seatmap' });
  root.style.maxWidth = `${width * MAX_SCALE}px`;
  root.append(
    svg('rect', { x: left, y: 4, width: widest * PITCH, height: 14, rx: 3, class: 'stage' }),
    svg('text', { x: width / 2, y: 14.5, class: 'stage-label' }, 'STAGE'),
  );
  let y = 30;
  for (const s of sections) {
    const summary = svg('text', { x: width / 2, y: y + 10, class: 'summary', 'data-summary': s.code });
    summary.dataset.label = `${s.code} · ${s.name} · ${money(s.price_cents, currency)}`;
    root.append(summary);
    live.summaries.set(s.code, summary);
    live.counts.set(s.code, { available: s.rows * s.seats_per_row, held: 0, sold: 0 });
    y += 18;
    const x0 = left + ((widest - s.seats_per_row) * PITCH) / 2;
    for (let row = 1; row <= s.rows; row++, y += PITCH) {
      root.append(svg('text', { x: x0 - 5, y: y + SEAT - 1.5, class: 'row-label' }, String(row)));
      for (let n = 1; n <= s.seats_per_row; n++) {
        const id = `${s.code}-${row}-${n}`;
        const rect = svg('rect', {
          id, 'data-seat': id, 'data-status': 'available', class: 'seat available',
          x: x0 + (n - 1) * PITCH, y, width: SEAT, height: SEAT, rx: 2,
        });
        rect.append(svg('title'));
        root.append(rect);
        live.seatEls.set(id, rect);
        live.status.set(id, 'available');
        paintTitle(id);
      }
    }
    y += 14;
    paintSummary(s.code);
  }
  root.setAttribute('viewBox', `0 0 ${width} ${y}`);
  root.addEventListener('click', onSeatClick); // one listener for every seat
  $('map').append(root);
}

function drawGa(section, currency) {
  const card = html('div', { class: 'ga-card', 'data-section': section.code });
  const counts = html('p', { class: 'ga-counts' });
  for (const k of STATUSES) counts.append(html('span', { 'data-count': k, class: `count ${k}` }, '0'), ` ${k} `);
  const bar = html('div', { class: 'bar', 'aria-hidden': 'true' });
  bar.append(html('span', { class: 'bar-fill' }));
  const form = html('form', { class: 'ga-hold' });
  const input = html('input', { type: 'number', min: 1, max: MAX_PER_HOLD, value: 1, 'aria-label': `Tickets in ${section.name}` });
  form.append(input, html('button', { type: 'submit', class: 'hold-ga' }, 'Hold tickets'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    placeHold({ section: section.code, quantity: Number(input.value) });
  });
  card.append(html('h3', {}, `${section.name} (${section.code}) · ${money(section.price_cents, currency)}`), counts, bar, form);
  $('ga').append(card);
  live.gaCards.set(section.code, card);
  setGa(section.code, { available: section.capacity, held: 0, sold: 0 });
}

function paintTitle(id) {
  const mine = live.mine.has(id) ? ' (yours)' : '';
  live.seatEls.get(id).firstChild.textContent = `${id}: ${live.status.get(id)}${mine}`;
}

function paintSummary(code) {
  const node = live.summaries.get(code);
  node.textContent = `${node.dataset.label} — ${live.counts.get(code).available} available`;
}

// ------------------------------------------------------------------ state

// `batch` gathers what to repaint once per message: {sections: Set, lost: []}.
function setSeat(id, status, batch) {
  const rect = live.seatEls.get(id);
  const old = live.status.get(id);
  if (!rect || old === status || !STATUSES.includes(status)) return;
  const code = id.slice(0, id.indexOf('-'));
  live.counts.get(code)[old] -= 1;
  live.counts.get(code)[status] += 1;
  batch.sections.add(code);
  live.status.set(id, status);
  rect.setAttribute('data-status', status);
  rect.classList.replace(old, status);
  // Our own hold's delta may arrive before the POST's answer: that is not "taken".
  if (status !== 'available' && !live.inFlight.has(id) && live.selected.delete(id)) {
    rect.classList.remove('selected');
    batch.lost.push(id);
  }
  paintTitle(id);
}

function setGa(code, { available, held, sold }) {
  const card = live.gaCards.get(code);
  if (!card) return;
  for (const [k, v] of Object.entries({ available, held, sold })) {
    card.dataset[k] = v;
    card.querySelector(`[data-count="${k}"]`).textContent = v;
  }
  card.querySelector('input').max = Math.max(1, Math.min(MAX_PER_HOLD, available));
  const total = available + held + sold;
  card.querySelector('.bar-fill').style.width = `${total ? (100 * (held + sold)) / total : 0}%`;
}

// Seated sections' counts come from their seats, so the stream need only
// carry seat changes for them; general sections' counts come as they are.
function apply(seatChanges, sectionChanges) {
  const batch = { sections: new Set(), lost: [] };
  for (const [id, status] of seatChanges) setSeat(id, status, batch);
  for (const s of sectionChanges) setGa(s.code ?? s.section, s);
  for (const code of batch.sections) paintSummary(code);
  if (batch.lost.length) {
    say(`Just taken by someone else: ${batch.lost.join(', ')}`, 'error');
    renderSelection();
  }
}

// ------------------------------------------------------------------ live stream

function setConn(state, text) {
  $('conn').dataset.state = state;
  $('conn').textContent = text;
}

function onMessage(msg) {
  live.lastHeard = Date.now();
  if (msg.type === 'snapshot') {
    const seats = msg.seats || {};
    apply(
      [...live.seatEls.keys()].map((id) => [id, seats[id] || 'available']),
      (msg.sections || []).filter((s) => s.kind === 'general'),
    );
    Object.assign(live, { version: msg.version, synced: true, liveSince: Date.now() });
    setConn('live', 'live');
  } else if (msg.type === 'delta') {
    if (!live.synced || msg.version <= live.version) return;
    if ((msg.from_version ?? msg.version) > live.version + 1) {
      // A gap: the changes are absolute, but the ones we missed are unknown.
      live.synced = false;
      send({ type: 'resync' });
      return;
    }
    const changes = msg.changes || [];
    apply(changes.filter((c) => c.seat).map((c) => [c.seat, c.status]), changes.filter((c) => c.section));
    live.version = msg.version;
  } else if (msg.type === 'ping') {
    send({ type: 'pong' });
  } else if (msg.type === 'error') {
    say(`Live updates: ${msg.detail || msg.code}`, 'error');
  }
}

function send(msg) {
  if (live.socket?.readyState === WebSocket.OPEN) live.socket.send(JSON.stringify(msg));
}

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${scheme}//${location.host}/ws/events/${encodeURIComponent(EVENT_ID)}`);
  Object.assign(live, { socket: ws, synced: false, lastHeard: Date.now() });
  setConn('connecting', live.retries ? 'reconnecting…' : 'connecting…');
  ws.onmessage = (e) => {
    try {
      onMessage(JSON.parse(e.data));
    } catch (err) {
      console.error('bad live message', err);
    }
  };
  ws.onclose = (e) => {
    if (live.socket !== ws) return;
    live.synced = false;
    if (e.code === 4404) {
      setConn('offline', 'offline');
      return say('This event has no live seat map.', 'error');
    }
    // A connection that stayed up a while starts the backoff afresh; one the
    // server keeps closing (1013 try later, 1008 too slow) backs off further.
    if (live.liveSince && Date.now() - live.liveSince > 10000) live.retries = 0;
    live.liveSince = 0;
    const base_s = Math.min(10, 0.5 * 2 ** live.retries++);
    // Jitter, so a restarted server is not met by every viewer in the same instant.
    setTimeout(connect, 1000 * base_s * (0.5 + Math.random() / 2));
    setConn('offline', 'reconnecting…');
  };
}

// A half-open connection never fires close; silence from the server's pings tells.
setInterval(() => {
  if (live.socket?.readyState !== WebSocket.OPEN) return;
  const quiet_ms = Date.now() - live.lastHeard;
  if (quiet_ms > SILENCE_MS) live.socket.close();
  else if (!live.synced && quiet_ms > 5000) send({ type: 'resync' }); // the snapshot has not come
}, 5000);

// ------------------------------------------------------------------ buying

function setLoggedIn(email) {
  if (!email) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(EMAIL_KEY);
  }
  $('login').hidden = Boolean(email);
  $('account').hidden = !email;
  $('who').textContent = email || '';
  renderSelection();
}

function limit() {
  const max = live.event?.max_tickets_per_customer || 0;
  return max > 0 ? Math.min(max, MAX_PER_HOLD) : MAX_PER_HOLD;
}

function renderSelection() {
  const n = live.selected.size;
  const loggedIn = Boolean(sessionStorage.getItem(TOKEN_KEY));
  const blocked = !loggedIn || live.busy || Boolean(live.hold); // one hold at a time: an order takes one
  $('selected').textContent = n ? [...live.selected].join(', ') : 'none';
  $('hold-seats').disabled = blocked || !n;
  $('hold-seats').textContent = !loggedIn ? 'Log in to hold seats' : n ? `Hold ${n} seat${n > 1 ? 's' : ''}` : 'Hold seats';
  for (const b of document.querySelectorAll('.hold-ga')) b.disabled = blocked;
}

function onSeatClick(e) {
  const rect = e.target.closest('[data-seat]');
  if (!rect) return;
  const id = rect.dataset.seat;
  if (live.selected.delete(id)) {
    rect.classList.remove('selected');
  } else if (live.status.get(id) !== 'available' || live.mine.has(id)) {
    return say(`${id} is ${live.mine.has(id) ? 'held by you' : live.status.get(id)}.`);
  } else if (live.selected.size >= limit()) {
    return say(`You can hold at most ${limit()} tickets.`, 'error');
  } else {
    live.selected.add(id);
    rect.classList.add('selected');
  }
  renderSelection();
}

async function placeHold(body) {
  if (!sessionStorage.getItem(TOKEN_KEY)) return say('Log in first.', 'error');
  // The same body after a failure in transit keeps its key: if the first try
  // did land, the server answers with that hold instead of placing another.
  const key = live.pending && JSON.stringify(live.pending.body) === JSON.stringify(body) ? live.pending.key : uuid4();
  Object.assign(live, { pending: { body, key }, inFlight: new Set(body.seats || []), busy: true });
  renderSelection();
  say('Holding…');
  try {
    const path = `/events/${encodeURIComponent(EVENT_ID)}/holds`;
    const headers = { 'Idempotency-Key': key };
    const pass = sessionStorage.getItem(`onsale.queue-pass.${EVENT_ID}`); // from the waiting room
    if (pass) headers['Onsale-Queue-Pass'] = pass;
    const hold = await api('POST', path, { body, auth: true, headers });
    live.pending = null;
    for (const id of live.selected) live.seatEls.get(id)?.classList.remove('selected');
    live.selected.clear();
    showHold(hold);
    say('Held. Complete your order before the timer runs out.');
  } catch (err) {
    if (!err.status) return say('Network error: try again.', 'error');
    live.pending = null;
    say(err.message, 'error');
    if (err.problem.code === 'seats_unavailable') flagUnavailable(err.problem.unavailable || []);
  } finally {
    Object.assign(live, { inFlight: new Set(), busy: false });
    renderSelection();
  }
}

function flagUnavailable(ids) {
  for (const id of ids) {
    const rect = live.seatEls.get(id);
    if (!rect) continue;
    live.selected.delete(id);
    rect.classList.remove('selected');
    rect.classList.add('unavailable');
    setTimeout(() => rect.classList.remove('unavailable'), 4000);
  }
}

function showHold(hold) {
  live.hold = hold;
  sessionStorage.setItem(HOLD_KEY, hold.hold_id);
  markMine(hold.seats || []);
  const section = live.event.sections.find((s) => s.code === hold.section);
  $('hold-what').textContent = hold.seats?.length ? hold.seats.join(', ') : `${hold.quantity} × ${section?.name || hold.section}`;
  $('amount').textContent = money(hold.amount_cents, hold.currency);
  $('hold').hidden = false;
  countDown();
  renderSelection();
}

function endHold(message) {
  clearInterval(live.timer);
  live.hold = null;
  sessionStorage.removeItem(HOLD_KEY);
  markMine([]);
  $('hold').hidden = true;
  renderSelection();
  if (message) say(message);
}

function markMine(ids) {
  const touched = new Set([...live.mine, ...ids]);
  live.mine = new Set(ids);
  for (const id of touched) {
    const rect = live.seatEls.get(id);
    if (!rect) continue;
    rect.classList.toggle('mine', live.mine.has(id));
    rect.toggleAttribute('data-mine', live.mine.has(id));
    paintTitle(id);
  }
}

// Against this machine's clock: a skewed clock shifts the display, never the hold.
function countDown() {
  clearInterval(live.timer);
  const update = () => {
    const left_s = Math.max(0, Math.ceil((Date.parse(live.hold.expires_at) - Date.now()) / 1000));
    const pad = (v) => String(v).padStart(2, '0');
    $('countdown').textContent = `${pad(Math.floor(left_s / 60))}:${pad(left_s % 60)}`;
    if (left_s === 0) endHold('Hold expired: the seats are back on sale.');
  };
  update();
  if (live.hold) live.timer = setInterval(update, 250);
}

async function release() {
  if (!live.hold) return;
  try {
    await api('DELETE', `/holds/${encodeURIComponent(live.hold.hold_id)}`, { auth: true });
    endHold('Released.');
  } catch (err) {
    say(err.message, 'error');
    if (err.status === 404 || err.status === 410) endHold();
  }
}

async function restoreHold() {
  const id = sessionStorage.getItem(HOLD_KEY);
  if (!id || !sessionStorage.getItem(TOKEN_KEY)) return;
  try {
    showHold(await api('GET', `/holds/${encodeURIComponent(id)}`, { auth: true }));
  } catch {
    sessionStorage.removeItem(HOLD_KEY); // expired or released meanwhile
  }
}

async function login(e) {
  e.preventDefault();
  $('login-button').disabled = true;
  try {
    const body = { email: $('login-email').value.trim(), password: $('login-password').value };
    const session = await api('POST', '/auth/login', { body });
    sessionStorage.setItem(TOKEN_KEY, session.access_token);
    sessionStorage.setItem(EMAIL_KEY, session.user.email);
    $('login-password').value = '';
    setLoggedIn(session.user.email);
    say('');
  } catch (err) {
    say(err.message, 'error');
  } finally {
    $('login-button').disabled = false;
  }
}

// ------------------------------------------------------------------ start

async function start() {
  $('login').addEventListener('submit', login);
  $('logout').addEventListener('click', () => setLoggedIn(null));
  $('hold-seats').addEventListener('click', () => placeHold({ seats: [...live.selected] }));
  $('release').addEventListener('click', release);
  setLoggedIn(sessionStorage.getItem(TOKEN_KEY) && (sessionStorage.getItem(EMAIL_KEY) || 'you'));
  try {
    live.event = await api('GET', `/events/${encodeURIComponent(EVENT_ID)}`);
  } catch (err) {
    $('event-name').textContent = 'Event unavailable';
    setConn('offline', 'offline');
    return say(err.status ? err.message : 'Cannot reach the server.', 'error');
  }
  drawEvent(live.event);
  renderSelection();
  connect();
  restoreHold();
}

start();
