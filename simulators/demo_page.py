"""The demo's page: a Telegram chat on the left, the amoCRM chat on the right (no build step)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Telegram ⇄ amoCRM bridge — demo</title>
<style>
  body { margin: 0; font: 15px/1.4 system-ui, sans-serif; background: #eef1f5; }
  header { padding: 10px 16px; background: #24303f; color: #fff; }
  header small { opacity: .75; }
  main { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; padding: 12px; }
  section { background: #fff; border-radius: 10px; display: flex; flex-direction: column;
            height: calc(100vh - 90px); box-shadow: 0 1px 3px #0002; }
  h2 { margin: 0; padding: 10px 14px; font-size: 16px; border-bottom: 1px solid #e3e6ea; }
  h2 select { margin-left: 8px; }
  .log { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column;
         gap: 6px; }
  #customer-log { background: #dfe9d5; }
  .bubble { max-width: 75%; padding: 6px 10px; border-radius: 10px; white-space: pre-wrap;
            background: #fff; align-self: flex-start; box-shadow: 0 1px 1px #0001; }
  .bubble.mine { align-self: flex-end; background: #e7fdd6; }
  #amo-log .bubble.mine { background: #dbe9ff; }
  .bubble img { display: block; max-width: 160px; border-radius: 6px; margin-bottom: 4px; }
  .meta { font-size: 12px; color: #667; margin-top: 2px; }
  .meta button, .buttons button { font-size: 12px; margin: 2px 2px 0 0; }
  .status-1, .status-2 { color: #2a7d2a; } .status--1 { color: #b22; }
  .typing { font-size: 12px; color: #667; padding: 0 14px; height: 16px; }
  form { display: flex; gap: 6px; padding: 10px; border-top: 1px solid #e3e6ea;
         flex-wrap: wrap; }
  form input { flex: 1; min-width: 160px; padding: 6px 8px; }
</style>
</head>
<body>
<header><b>Telegram ⇄ amoCRM bridge — demo</b>
  <small>the real bridge (<span id="bridge"></span>) between simulators of Telegram and
  amoCRM; write on both sides</small></header>
<main>
  <section>
    <h2>Telegram: chat with the bot, as
      <select id="who">
        <option value="customer">Ivan (a customer)</option>
        <option value="staff">Olga (staff: try /status, /talk 117, /help)</option>
      </select></h2>
    <div class="log" id="customer-log"></div>
    <div class="typing" id="customer-typing"></div>
    <form id="customer-form">
      <input id="customer-input" placeholder="Message" autocomplete="off">
      <button id="customer-send">Send</button>
      <button type="button" id="customer-photo">📷 Photo</button>
      <button type="button" id="customer-location">📍 Location</button>
    </form>
  </section>
  <section>
    <h2>amoCRM: the chat with Ivan Petrov, as a manager</h2>
    <div class="log" id="amo-log"></div>
    <div class="typing"></div>
    <form id="manager-form">
      <input id="manager-input" placeholder="Answer" autocomplete="off">
      <button id="manager-send">Send</button>
      <button type="button" id="manager-buttons">Send with buttons</button>
      <button type="button" id="manager-picture">🖼 Picture</button>
      <button type="button" id="manager-typing">✍ Typing</button>
    </form>
  </section>
</main>
<script>
const $ = (id) => document.getElementById(id);
const post = (action, body) => fetch('/api/' + action, {
  method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body || {})
}).then(refresh);
const who = () => $('who').value;

function bubble(entry, mine) {
  const div = document.createElement('div');
  div.className = 'bubble' + (mine ? ' mine' : '');
  div.dataset.id = entry.id || '';
  const image = typeof entry.image === 'string' ? entry.image : entry.media;
  if (image && ['picture', 'photo'].includes(entry.kind)) {
    const img = document.createElement('img');
    img.src = image;
    div.appendChild(img);
  } else if (entry.kind && !['text', 'message'].includes(entry.kind)) {
    div.appendChild(document.createTextNode('[' + entry.kind + '] '));
  }
  div.appendChild(document.createTextNode(entry.text || ''));
  return div;
}

function meta(div, text, cls) {
  const line = document.createElement('div');
  line.className = 'meta ' + (cls || '');
  line.textContent = text;
  div.appendChild(line);
  return line;
}

function reactButton(line, action, id) {
  const button = document.createElement('button');
  button.textContent = '👍';
  button.title = 'react';
  button.onclick = () => post(action, {id: id, emoji: '👍'});
  line.appendChild(button);
}

function renderTelegram(chat) {
  const log = $('customer-log');
  log.replaceChildren();
  for (const entry of chat.messages) {
    const mine = entry.from === 'me';
    const div = bubble(entry, mine);
    if (mine && entry.reaction) meta(div, entry.reaction);
    if (!mine) {
      if (entry.buttons && entry.buttons.length) {
        const row = document.createElement('div');
        row.className = 'buttons';
        for (const text of entry.buttons) {
          const button = document.createElement('button');
          button.textContent = text;
          button.onclick = () => post(who(), {text: text});
          row.appendChild(button);
        }
        div.appendChild(row);
      }
      if (who() === 'customer' && entry.id) reactButton(meta(div, ''), 'customer-react', entry.id);
    }
    log.appendChild(div);
  }
  $('customer-typing').textContent = chat.typing ? 'the bot is typing…' : '';
}

function renderAmo(chat) {
  const log = $('amo-log');
  log.replaceChildren();
  for (const entry of chat.messages) {
    const mine = entry.from === 'manager';
    const div = bubble(entry, mine);
    if (mine) {
      div.dataset.status = entry.status_code === null ? '' : String(entry.status_code);
      const line = meta(div, entry.status + (entry.reaction ? '  ' + entry.reaction : ''),
                        'status status-' + entry.status_code);
      line.classList.add('status');
    } else {
      reactButton(meta(div, ''), 'manager-react', entry.id);
    }
    log.appendChild(div);
  }
}

let last = '';
async function refresh() {
  const response = await fetch('/api/state');
  const state = await response.json();
  const text = JSON.stringify([state, who()]);
  if (text === last) return;
  last = text;
  $('bridge').textContent = state.bridge;
  renderTelegram(state[who()]);
  renderAmo(state.amo);
}

$('customer-form').onsubmit = (event) => {
  event.preventDefault();
  const text = $('customer-input').value.trim();
  if (text) post(who(), {text: text});
  $('customer-input').value = '';
};
$('customer-photo').onclick = () => post(who(), {kind: 'photo', text: $('customer-input').value});
$('customer-location').onclick = () => post(who(), {kind: 'location'});
$('manager-form').onsubmit = (event) => {
  event.preventDefault();
  const text = $('manager-input').value.trim();
  if (text) post('manager', {text: text});
  $('manager-input').value = '';
};
$('manager-buttons').onclick = () => post('manager', {
  kind: 'buttons', text: $('manager-input').value.trim() || 'Shall we deliver tomorrow?'});
$('manager-picture').onclick = () =>
  post('manager', {kind: 'picture', text: $('manager-input').value});
$('manager-typing').onclick = () => post('manager-typing');
$('who').onchange = () => { last = ''; refresh(); };
refresh();
setInterval(refresh, 500);
</script>
</body>
</html>
"""
