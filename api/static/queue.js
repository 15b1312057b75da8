// Waiting room: joins the event's line, shows the place (pushed by the
// server's WebSocket as admissions go by), and when the buyer's turn comes
// keeps the pass and moves on to the seat map, which sends it with holds.
'use strict';

const EVENT_ID = decodeURIComponent(location.pathname.split('/')[2] || '');
const TOKEN_KEY = 'onsale.access';
const EMAIL_KEY = 'onsale.email';
const PASS_KEY = `onsale.queue-pass.${EVENT_ID}`; // read by live.js for holds
const $ = (id) => document.getElementById(id);
const state = { first: null, done: false, retry: 1000 };

function say(text, kind = 'info') {
  $('message').textContent = text;
  $('message').dataset.kind = kind;
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw Object.assign(new Error((data && (data.detail || data.title)) || `HTTP ${res.status}`), { status: res.status, problem: data || {} });
  return data;
}

function wait(seconds) {
  if (seconds === null || seconds === undefined) return 'unknown';
  if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function render(place) {
  if (place.status === 'waiting') {
    if (state.first === null || place.ahead > state.first) state.first = place.ahead;
    $('ahead').textContent = place.ahead.toLocaleString();
    $('progress').value = state.first ? (state.first - place.ahead) / state.first : 1;
    $('eta').textContent = wait(place.eta_s);
    say(place.state === 'pre_queue' ? 'The sale has not opened yet: your place is kept.'
      : place.state === 'sold_out' ? 'Sold out for now: tickets may come back.' : 'In line.');
  } else if (place.status === 'expired') {
    say('Your turn passed unused. Reload to join the line again.', 'error');
    state.done = true;
  } else if (place.status === 'none') {
    say('You are not in line.', 'error');
  }
}

function admitted(pass) {
  state.done = true;
  sessionStorage.setItem(PASS_KEY, pass);
  $('ahead').textContent = '0';
  $('progress').value = 1;
  say("It's your turn: taking you to the seat map…");
  location.assign(`/events/${encodeURIComponent(EVENT_ID)}/live`);
}

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/ws/events/${encodeURIComponent(EVENT_ID)}/queue`);
  ws.onopen = () => {
    $('conn').dataset.state = 'live';
    $('conn').textContent = 'live';
    state.retry = 1000;
    ws.send(JSON.stringify({ type: 'auth', token: sessionStorage.getItem(TOKEN_KEY) }));
  };
  ws.onmessage = (e) => {
    const message = JSON.parse(e.data);
    if (message.type === 'position') render(message);
    else if (message.type === 'admitted') admitted(message.pass);
  };
  ws.onclose = () => {
    $('conn').dataset.state = 'offline';
    $('conn').textContent = 'reconnecting…';
    if (!state.done) setTimeout(join, state.retry);
    state.retry = Math.min(state.retry * 2, 30000);
  };
}

async function join() {
  try {
    const place = await api('POST', `/events/${encodeURIComponent(EVENT_ID)}/queue/join`);
    if (place.status === 'admitted') return admitted(place.pass);
    render(place);
    connect();
  } catch (err) {
    if (err.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      $('login').hidden = false;
      return say('Log in to join the line.');
    }
    say(err.message, 'error');
    if (!err.status) setTimeout(join, 3000); // the network: try again
  }
}

$('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    const session = await api('POST', '/auth/login', { email: $('login-email').value, password: $('login-password').value });
    sessionStorage.setItem(TOKEN_KEY, session.access_token);
    sessionStorage.setItem(EMAIL_KEY, session.user.email);
    $('login').hidden = true;
    join();
  } catch (err) {
    say(err.message, 'error');
  }
});

(async () => {
  try {
    const event = await api('GET', `/events/${encodeURIComponent(EVENT_ID)}`);
    $('event-name').textContent = event.name;
    document.title = `${event.name} · waiting room`;
  } catch (err) {
    return say(err.message, 'error');
  }
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    $('login').hidden = false;
    return say('Log in to join the line.');
  }
  join();
})();
