// runbox's playground: an editor, live runs, share links and rooms, on runbox's public API
// only (same origin). Nothing here needs anything of the server that a client of the API
// does not have.

import './style.css';
import '@xterm/xterm/css/xterm.css';
import { EditorView, basicSetup } from 'codemirror';
import { EditorState, Compartment, Prec } from '@codemirror/state';
import { keymap } from '@codemirror/view';
import { indentWithTab } from '@codemirror/commands';
import { StreamLanguage } from '@codemirror/language';
import { oneDark } from '@codemirror/theme-one-dark';

const $ = (id) => document.getElementById(id);

// ---- Languages: highlighting and a first program for each catalogue language ----------

// Each language's highlighting is a chunk of its own, loaded when the language is first
// shown: the page starts with the editor alone.
const legacy = (mode) => StreamLanguage.define(mode);
const HIGHLIGHT = {
  python: async () => (await import('@codemirror/lang-python')).python(),
  javascript: async () => (await import('@codemirror/lang-javascript')).javascript(),
  typescript: async () => (await import('@codemirror/lang-javascript')).javascript({ typescript: true }),
  c: async () => (await import('@codemirror/lang-cpp')).cpp(),
  cpp: async () => (await import('@codemirror/lang-cpp')).cpp(),
  java: async () => (await import('@codemirror/lang-java')).java(),
  go: async () => (await import('@codemirror/lang-go')).go(),
  rust: async () => (await import('@codemirror/lang-rust')).rust(),
  php: async () => (await import('@codemirror/lang-php')).php({ plain: false }),
  ruby: async () => legacy((await import('@codemirror/legacy-modes/mode/ruby')).ruby),
  bash: async () => legacy((await import('@codemirror/legacy-modes/mode/shell')).shell),
  lua: async () => legacy((await import('@codemirror/legacy-modes/mode/lua')).lua),
  perl: async () => legacy((await import('@codemirror/legacy-modes/mode/perl')).perl),
  csharp: async () => legacy((await import('@codemirror/legacy-modes/mode/clike')).csharp),
};

/** Highlights the editor for `languageId` once its chunk is in (at once when it was). */
async function highlightFor(languageId) {
  const load = HIGHLIGHT[languageId];
  if (!load) return;
  try {
    const extension = await load();
    if (state.language?.id === languageId) {
      view.dispatch({ effects: highlight.reconfigure(extension) });
    }
  } catch {
    // Without its highlighting the editor still edits.
  }
}

const HELLO = {
  python: 'print("Hello, World!")\n',
  javascript: 'console.log("Hello, World!");\n',
  typescript: 'const greeting: string = "Hello, World!";\nconsole.log(greeting);\n',
  c: '#include <stdio.h>\n\nint main(void) {\n    printf("Hello, World!\\n");\n    return 0;\n}\n',
  cpp: '#include <iostream>\n\nint main() {\n    std::cout << "Hello, World!" << std::endl;\n}\n',
  java: 'public class Main {\n    public static void main(String[] args) {\n        System.out.println("Hello, World!");\n    }\n}\n',
  go: 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("Hello, World!")\n}\n',
  rust: 'fn main() {\n    println!("Hello, World!");\n}\n',
  ruby: 'puts "Hello, World!"\n',
  php: '<?php\necho "Hello, World!\\n";\n',
  bash: 'echo "Hello, World!"\n',
  lua: 'print("Hello, World!")\n',
  perl: 'print "Hello, World!\\n";\n',
  csharp: 'using System;\n\nclass Program {\n    static void Main() {\n        Console.WriteLine("Hello, World!");\n    }\n}\n',
};

// ---- State --------------------------------------------------------------------------

const state = {
  languages: [],
  language: null,
  files: [], // [{ name, doc }]; the first is the program's entry file
  current: 0,
  running: null, // { stop: () => void }
  fileUrls: [], // object URLs of the last run's files, revoked at the next run
};

const highlight = new Compartment();
const dark = window.matchMedia('(prefers-color-scheme: dark)').matches;
const view = new EditorView({
  parent: $('editor'),
  state: EditorState.create({ doc: '' }),
});

function editorState(doc) {
  return EditorState.create({
    doc,
    extensions: [
      basicSetup,
      // Before basicSetup's own Mod-Enter (insert a blank line).
      Prec.highest(keymap.of([{ key: 'Mod-Enter', run: () => { run(); return true; } }])),
      keymap.of([indentWithTab]),
      highlight.of([]),
      dark ? oneDark : [],
      EditorView.contentAttributes.of({ 'aria-label': 'Code editor' }),
    ],
  });
}

function saveCurrent() {
  const file = state.files[state.current];
  if (file) file.doc = view.state.doc.toString();
}

function showFile(index) {
  saveCurrent();
  state.current = index;
  view.setState(editorState(state.files[index].doc));
  highlightFor(state.language?.id);
  renderTabs();
}

function renderTabs() {
  const tabs = $('tabs');
  tabs.replaceChildren();
  state.files.forEach((file, index) => {
    const tab = document.createElement('button');
    tab.type = 'button';
    tab.role = 'tab';
    tab.textContent = file.name;
    tab.setAttribute('aria-selected', String(index === state.current));
    tab.tabIndex = index === state.current ? 0 : -1;
    tab.addEventListener('click', () => showFile(index));
    tab.addEventListener('keydown', (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = (index + step + state.files.length) % state.files.length;
      showFile(next);
      tabs.children[next].focus();
    });
    tabs.append(tab);
  });
  $('file-delete').disabled = state.files.length < 2;
}

function setProgram(languageId, files) {
  state.language = state.languages.find((l) => l.id === languageId) || state.languages[0];
  $('language').value = state.language.id;
  state.files = files.map((f) => ({ name: f.name, doc: f.content }));
  state.current = 0;
  view.setState(editorState(state.files[0].doc));
  highlightFor(state.language.id);
  renderTabs();
}

function templateFor(language) {
  return [{ name: language.main_file, content: HELLO[language.id] || '' }];
}

// ---- The API: requests, keys and errors in words -----------------------------------

const KEY_STORAGE = 'runbox-api-key';

function headers(extra = {}) {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

/** The visitor's words for an API error (`{error: {code, message}}`) and its response. */
function explain(response, body) {
  const code = body?.error?.code;
  const retry = response?.headers.get('Retry-After');
  switch (code) {
    case 'rate_limited':
      return `You are sending requests too fast. Try again in ${retry || 'a few'} seconds.`;
    case 'overloaded':
      return `The server is busy right now. Try again in ${retry || 'a few'} seconds.`;
    case 'session_not_found':
      return 'This room no longer exists: it was closed or it expired.';
    case 'shutting_down':
      return 'The server is restarting. Try again in a moment.';
    case 'unauthorized':
      askForKey('This server needs an API key.');
      return 'This server needs an API key: enter it above.';
    case 'payload_too_large':
      return 'The program and its input are too large for this server.';
    case 'sandbox_unavailable':
      return 'The server cannot run programs right now (its sandboxes are unavailable).';
    case 'internal_error':
      return 'The server failed to run this. Try again; if it keeps failing, tell its operator.';
    default:
      if (body?.error?.message) return body.error.message;
      return `The server answered ${response ? response.status : 'nothing'}.`;
  }
}

function say(text) {
  const message = $('message');
  message.textContent = text || '';
  message.hidden = !text;
}

function askForKey(reason) {
  $('key-reason').textContent = reason;
  $('key-panel').hidden = false;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: headers(body ? { 'Content-Type': 'application/json' } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!response.ok) throw new Error(explain(response, json));
  return json;
}

function socketUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

// ---- Running: streamed over NDJSON, or interactive over /run/ws -------------------

const BADGES = {
  success: 'success',
  runtime_error: 'runtime error',
  compile_error: 'compile error',
  timeout: 'timeout',
  memory_limit_exceeded: 'memory limit',
  output_limit_exceeded: 'output limit',
};

function setBadge(status, text) {
  const badge = $('badge');
  badge.dataset.status = status;
  badge.textContent = text;
}

function request() {
  saveCurrent();
  const args = $('args').value.trim();
  const outputs = $('outputs').value.trim();
  const body = {
    language: state.language.id,
    files: state.files.map((f) => ({ name: f.name, content: f.doc })),
    input: $('stdin').value,
    args: args ? args.split(/\s+/) : [],
  };
  if (outputs) body.outputs = outputs.split(/\s+/);
  return body;
}

function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function decodeBase64(text) {
  const plain = atob(text);
  return Uint8Array.from(plain, (c) => c.charCodeAt(0));
}

/** One returned file: an image is shown inline, any other file gets a download link; one not
 * returned says why. HTML and SVG are never rendered as documents (SVG only as an image). */
function showReturnedFile(file) {
  const pane = $('files');
  pane.hidden = false;
  $('files-heading').hidden = false;
  const item = document.createElement('figure');
  item.className = 'file';
  const caption = document.createElement('figcaption');
  if (file.content != null) {
    const bytes = decodeBase64(file.content);
    const url = URL.createObjectURL(new Blob([bytes], { type: file.media_type }));
    state.fileUrls.push(url);
    if (file.media_type.startsWith('image/')) {
      const img = document.createElement('img');
      img.src = `data:${file.media_type};base64,${file.content}`;
      img.alt = file.name;
      item.append(img);
    }
    const link = document.createElement('a');
    link.href = url;
    link.download = file.name.split('/').pop();
    link.textContent = file.name;
    caption.append(link, ` ${sizeText(file.size)}`);
  } else {
    const why = file.refused || `${sizeText(file.size)}, past the size cap: not returned`;
    caption.textContent = `${file.name}: ${why}`;
    caption.className = 'not-returned';
  }
  item.append(caption);
  pane.append(item);
}

/** What the result says of the files beyond each one. */
function filesNote(result) {
  const notes = [];
  if (result.files_error) notes.push(result.files_error);
  if (result.files_omitted) notes.push(`${result.files_omitted} more matching files not listed`);
  if (!notes.length) return;
  const note = document.createElement('p');
  note.className = 'not-returned';
  note.textContent = notes.join('; ');
  $('files').hidden = false;
  $('files-heading').hidden = false;
  $('files').append(note);
}

function append(pane, stream, text) {
  const last = pane.lastElementChild;
  if (last && last.dataset.stream === stream) {
    last.textContent += text;
  } else {
    const span = document.createElement('span');
    span.dataset.stream = stream;
    span.className = stream;
    span.textContent = text;
    pane.append(span);
  }
  pane.scrollTop = pane.scrollHeight;
}

function onEvent(event) {
  switch (event.event) {
    case 'started':
      setBadge('running', 'running');
      break;
    case 'compile':
      append($('compile-output'), event.stream, event.data);
      break;
    case 'stdout':
    case 'stderr':
      append($('output'), event.event, event.data);
      break;
    case 'file':
      showReturnedFile(event);
      break;
    case 'result': {
      const r = event.result;
      if (r.files) filesNote(r);
      setBadge(r.status, BADGES[r.status] || r.status);
      const parts = [`${r.duration_ms} ms`];
      if (r.cpu_time_ms != null) parts.push(`CPU ${r.cpu_time_ms} ms`);
      if (r.memory_kb != null) parts.push(`memory ${(r.memory_kb / 1024).toFixed(1)} MB`);
      if (r.exit_code != null && r.exit_code !== 0) parts.push(`exit code ${r.exit_code}`);
      if (r.signal) parts.push(r.signal);
      $('usage').textContent = parts.join(' · ');
      break;
    }
    case 'error':
      setBadge('error', 'not run');
      say(explain(null, { error: event }));
      break;
    default:
  }
}

function started(stop) {
  say('');
  for (const url of state.fileUrls.splice(0)) URL.revokeObjectURL(url);
  $('files').replaceChildren();
  $('files').hidden = true;
  $('files-heading').hidden = true;
  $('output').replaceChildren();
  $('compile-output').replaceChildren();
  $('usage').textContent = '';
  setBadge('running', 'starting');
  state.running = { stop };
  $('run').disabled = true;
  $('stop').disabled = false;
}

function finished() {
  state.running = null;
  $('run').disabled = false;
  $('stop').disabled = true;
  $('live-input').hidden = true;
}

async function run() {
  if (state.running || !state.language) return;
  if ($('interactive').checked) return runInteractive();
  const controller = new AbortController();
  started(() => controller.abort());
  try {
    const response = await fetch('/run', {
      method: 'POST',
      headers: headers({ 'Content-Type': 'application/json', Accept: 'application/x-ndjson' }),
      body: JSON.stringify(request()),
      signal: controller.signal,
    });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      setBadge('error', 'not run');
      say(explain(response, body));
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value;
      let newline;
      while ((newline = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        if (line.trim()) onEvent(JSON.parse(line));
      }
    }
  } catch (error) {
    if (controller.signal.aborted) {
      setBadge('stopped', 'stopped');
    } else {
      setBadge('error', 'not run');
      say('The connection to the server was lost.');
    }
  } finally {
    finished();
  }
}

/** Browsers send no Authorization header on a WebSocket: with API keys on, live input and
 * rooms cannot be authenticated from a page. */
function socketsNeedNoKey() {
  if (!localStorage.getItem(KEY_STORAGE)) return true;
  say('This server uses API keys, and a browser cannot send one on a WebSocket: interactive runs and rooms need a server with keys off. Runs work.');
  return false;
}

function runInteractive() {
  if (!socketsNeedNoKey()) return;
  const socket = new WebSocket(socketUrl('/run/ws'));
  let ended = false;
  started(() => socket.send(JSON.stringify({ type: 'kill' })));
  $('live-input').hidden = false;
  socket.onopen = () => {
    socket.send(JSON.stringify(request()));
    $('live-stdin').focus();
  };
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.event === 'result') ended = true;
    onEvent(event);
  };
  socket.onclose = () => {
    if (!ended && $('badge').dataset.status === 'running') {
      setBadge('error', 'not run');
      say('The connection to the server was lost.');
    }
    finished();
  };
  state.running.socket = socket;
}

$('live-input').addEventListener('submit', (event) => {
  event.preventDefault();
  const socket = state.running?.socket;
  if (!socket) return;
  const line = $('live-stdin').value;
  socket.send(JSON.stringify({ type: 'stdin', data: `${line}\n` }));
  append($('output'), 'stdin', `${line}\n`);
  $('live-stdin').value = '';
});
$('live-eof').addEventListener('click', () => {
  state.running?.socket?.send(JSON.stringify({ type: 'stdin_close' }));
});

// ---- Share: the program in the URL fragment, deflated; nothing stored anywhere -------

function toBase64Url(bytes) {
  let text = '';
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

function fromBase64Url(text) {
  const plain = atob(text.replaceAll('-', '+').replaceAll('_', '/'));
  return Uint8Array.from(plain, (c) => c.charCodeAt(0));
}

async function squeeze(text, transform) {
  const stream = new Blob([text]).stream().pipeThrough(transform);
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function shareLink() {
  saveCurrent();
  const program = {
    language: state.language.id,
    files: state.files.map((f) => ({ name: f.name, content: f.doc })),
    stdin: $('stdin').value,
    args: $('args').value,
    outputs: $('outputs').value,
  };
  const packed = await squeeze(JSON.stringify(program), new CompressionStream('deflate-raw'));
  return `${location.origin}/#code=${toBase64Url(packed)}`;
}

async function restoreShared(encoded) {
  const bytes = fromBase64Url(encoded);
  const text = new TextDecoder().decode(
    await squeeze(bytes, new DecompressionStream('deflate-raw')),
  );
  const program = JSON.parse(text);
  setProgram(program.language, program.files);
  $('stdin').value = program.stdin || '';
  $('args').value = program.args || '';
  if (program.outputs != null) $('outputs').value = program.outputs;
}

$('share').addEventListener('click', async () => {
  const link = await shareLink();
  history.replaceState(null, '', link);
  try {
    await navigator.clipboard.writeText(link);
    say('Share link copied: it holds the whole program, nothing is stored on the server.');
  } catch {
    say('Share link: this page\'s address now holds the whole program.');
  }
});

// ---- Rooms: a session's REPL on a shared terminal -------------------------------------

const room = { id: null, socket: null, terminal: null, fit: null };

/** The room's terminal; xterm.js is a chunk of its own, loaded with the first room. */
async function openTerminal() {
  if (room.terminal) return;
  const [{ Terminal }, { FitAddon }] = await Promise.all([
    import('@xterm/xterm'),
    import('@xterm/addon-fit'),
  ]);
  if (room.terminal) return;
  room.terminal = new Terminal({ convertEol: false, fontSize: 14, cursorBlink: true });
  room.fit = new FitAddon();
  room.terminal.loadAddon(room.fit);
  room.terminal.open($('terminal'));
  room.fit.fit();
  room.terminal.onData((data) => {
    if (room.socket?.readyState === WebSocket.OPEN) {
      room.socket.send(JSON.stringify({ type: 'input', data }));
    }
  });
  room.terminal.onResize(({ cols, rows }) => {
    if (room.socket?.readyState === WebSocket.OPEN) {
      room.socket.send(JSON.stringify({ type: 'resize', cols, rows }));
    }
  });
  window.addEventListener('resize', () => room.fit?.fit());
}

async function joinRoom(id) {
  if (!socketsNeedNoKey()) return;
  room.id = id;
  $('room').hidden = false;
  $('invite').value = `${location.origin}/#room=${id}`;
  await openTerminal();
  const socket = new WebSocket(socketUrl(`/sessions/${id}/terminal`));
  room.socket = socket;
  socket.onopen = () => {
    const { cols, rows } = room.terminal;
    socket.send(JSON.stringify({ type: 'resize', cols, rows }));
    room.terminal.focus();
  };
  socket.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    switch (frame.type) {
      case 'output':
        room.terminal.write(frame.data);
        break;
      case 'presence':
        $('presence').textContent = frame.clients === 1
          ? '1 person in this room'
          : `${frame.clients} people in this room`;
        break;
      case 'exit':
        room.terminal.write('\r\n[the program ended: Switch language starts it again]\r\n');
        break;
      case 'error':
        say(explain(null, { error: frame }));
        break;
      default:
    }
  };
  socket.onclose = () => {
    if (room.socket === socket) {
      $('presence').textContent = 'disconnected';
    }
  };
}

async function checkRoom(id) {
  const response = await fetch(`/sessions/${id}`, { headers: headers() });
  if (response.ok) return true;
  const body = await response.json().catch(() => null);
  say(explain(response, body));
  return false;
}

$('room-open').addEventListener('click', async () => {
  if (!socketsNeedNoKey()) return;
  try {
    const session = await api('POST', '/sessions', { language: state.language.id });
    $('room-language').value = session.language;
    history.replaceState(null, '', `/#room=${session.id}`);
    await joinRoom(session.id);
  } catch (error) {
    say(error.message);
  }
});

$('copy-invite').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText($('invite').value);
    say('Invite link copied.');
  } catch {
    $('invite').select();
  }
});

$('room-start').addEventListener('click', () => {
  if (room.socket?.readyState === WebSocket.OPEN) {
    room.socket.send(JSON.stringify({ type: 'start', language: $('room-language').value }));
  }
});

$('room-close').addEventListener('click', async () => {
  if (!room.id) return;
  try {
    await api('DELETE', `/sessions/${room.id}`);
  } catch (error) {
    say(error.message);
  }
  room.socket?.close();
  room.socket = null;
  room.id = null;
  room.terminal?.dispose();
  room.terminal = null;
  $('room').hidden = true;
  history.replaceState(null, '', '/');
});

// ---- Files: add, rename, delete ----------------------------------------------------

function askName(question, fallback) {
  const name = window.prompt(question, fallback);
  if (!name) return null;
  if (!/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(name) || state.files.some((f) => f.name === name)) {
    say(`"${name}" cannot be used: letters, digits, ".", "_", "-" and "/" only, and no name twice.`);
    return null;
  }
  return name;
}

$('file-add').addEventListener('click', () => {
  const name = askName('Name of the new file', `file${state.files.length + 1}.txt`);
  if (!name) return;
  saveCurrent();
  state.files.push({ name, doc: '' });
  showFile(state.files.length - 1);
});
$('file-rename').addEventListener('click', () => {
  const file = state.files[state.current];
  const name = askName('New name of the file', file.name);
  if (!name) return;
  file.name = name;
  renderTabs();
});
$('file-delete').addEventListener('click', () => {
  if (state.files.length < 2) return;
  state.files.splice(state.current, 1);
  state.current = Math.max(0, state.current - 1);
  view.setState(editorState(state.files[state.current].doc));
  highlightFor(state.language.id);
  renderTabs();
});

// ---- Start ------------------------------------------------------------------------

$('run').addEventListener('click', run);
$('stop').addEventListener('click', () => state.running?.stop());
$('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  localStorage.setItem(KEY_STORAGE, $('api-key').value.trim());
  $('key-panel').hidden = true;
  start();
});
$('language').addEventListener('change', () => {
  const language = state.languages.find((l) => l.id === $('language').value);
  setProgram(language.id, templateFor(language));
});
document.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey) && !event.defaultPrevented) {
    event.preventDefault();
    run();
  }
});

async function start() {
  let listed;
  try {
    listed = await api('GET', '/languages');
  } catch (error) {
    say(error.message);
    return;
  }
  state.languages = listed.languages.filter((l) => l.version);
  for (const select of [$('language'), $('room-language')]) {
    select.replaceChildren(...state.languages.map((l) => {
      const option = document.createElement('option');
      option.value = l.id;
      option.textContent = `${l.name} ${l.version}`;
      return option;
    }));
  }
  $('language').disabled = false;
  $('run').disabled = false;
  const hash = location.hash.slice(1);
  const python = state.languages.find((l) => l.id === 'python') || state.languages[0];
  setProgram(python.id, templateFor(python));
  if (hash.startsWith('code=')) {
    try {
      await restoreShared(hash.slice(5));
    } catch {
      say('This share link is damaged: the editor starts afresh.');
    }
  } else if (hash.startsWith('room=')) {
    const id = hash.slice(5);
    if (await checkRoom(id)) await joinRoom(id);
  }
  // When the page became usable, for whoever measures it (the browser tests do).
  performance.mark('runbox-ready');
  document.body.dataset.ready = 'true';
}

start();
