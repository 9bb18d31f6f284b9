// nodewarden web console. Plain JavaScript, no dependencies, no build step.
//
// Rules this file keeps (controller/src/console.rs serves it under a strict CSP):
// - It talks only to the controller's authenticated /api/v1 API, with the API token as a bearer
//   token kept in sessionStorage (this tab only; never a cookie, never a URL).
// - Everything from the network goes into the page as text (textContent, new Option), never as
//   HTML: node names, service names, operator names and error messages are all untrusted.
'use strict';

(() => {
  const TOKEN_KEY = 'nodewarden.token';
  const OPERATOR_KEY = 'nodewarden.operator';
  const REFRESH_MS = 3000;
  // Relative to the page (/console/), so the console also works behind a path-prefixing proxy.
  const API = new URL('../api/v1/', document.baseURI);

  const ACTIONS = {
    wake: {
      label: 'Wake',
      confirm: true,
      all: 'start every managed service (Wake-on-LAN first if the node answers neither its agent nor SSH)',
      one: 'start',
    },
    stop: { label: 'Stop', confirm: true, all: 'stop every managed service', one: 'stop' },
    restart: { label: 'Restart', confirm: true, all: 'restart every managed service', one: 'restart' },
    status: { label: 'Status', confirm: false, all: 'check every managed service', one: 'check' },
  };

  const $ = (id) => document.getElementById(id);

  // Bumped at every sign-in and sign-out: answers that arrive for an older session are dropped.
  let generation = 0;
  let timer = null;
  // Per node: its table row and cells, kept across refreshes so controls keep their state.
  const rows = new Map();
  // Per node: the last action's outcome in this tab, and whether one is running.
  const results = new Map();
  const running = new Set();

  class Unauthorized extends Error {}

  // ---------- HTTP ----------

  async function api(path, options = {}) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) throw new Unauthorized('not signed in');
    const headers = Object.assign({ Authorization: 'Bearer ' + token }, options.headers || {});
    const response = await fetch(new URL(path, API), Object.assign({}, options, {
      headers,
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
      referrerPolicy: 'no-referrer',
    }));
    if (response.status === 401) throw new Unauthorized('401 Unauthorized');
    return response;
  }

  // "503 Service Unavailable: <the API's error message>".
  async function errorText(response) {
    let text = '';
    try {
      text = (await response.text()).trim();
      const parsed = JSON.parse(text);
      if (parsed && typeof parsed.error === 'string') text = parsed.error;
    } catch (_) { /* not JSON: keep the text */ }
    const status = `${response.status} ${response.statusText}`.trim();
    return text ? `${status}: ${text.slice(0, 500)}` : status;
  }

  // Calls onLine with each JSON line of an NDJSON body as it arrives.
  async function readLines(response, onLine) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      buffered += decoder.decode(value || new Uint8Array(), { stream: !done });
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line) onLine(JSON.parse(line));
      }
      if (done) break;
    }
    if (buffered.trim()) onLine(JSON.parse(buffered));
  }

  // ---------- formatting ----------

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function pad(n) { return String(n).padStart(2, '0'); }

  function clock(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function ago(ms) {
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 90) return `${s} s ago`;
    if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
    if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    let v = Number(n) || 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
  }

  // ---------- views ----------

  function showLogin(message) {
    $('app-view').hidden = true;
    $('session').hidden = true;
    $('login-view').hidden = false;
    const error = $('login-error');
    error.textContent = message || '';
    error.hidden = !message;
    $('login-operator').value = sessionStorage.getItem(OPERATOR_KEY) || $('login-operator').value;
    $('login-token').value = '';
    ($('login-operator').value ? $('login-token') : $('login-operator')).focus();
  }

  function showApp() {
    $('login-view').hidden = true;
    $('login-error').hidden = true;
    $('app-view').hidden = false;
    $('session').hidden = false;
    $('session-operator').textContent = sessionStorage.getItem(OPERATOR_KEY) || '';
  }

  // Forgets the token and everything shown with it.
  function signOut(message) {
    generation += 1;
    clearTimeout(timer);
    timer = null;
    sessionStorage.removeItem(TOKEN_KEY);
    const dialog = $('confirm');
    if (dialog.open) dialog.close('cancel');
    rows.clear();
    results.clear();
    running.clear();
    $('fleet-body').replaceChildren();
    $('audit-body').replaceChildren();
    $('fragments-results').replaceChildren();
    $('fragments-status').textContent = '';
    $('fragments-pairs').value = '';
    $('fleet-summary').textContent = '';
    $('fleet-status').textContent = '';
    $('audit-status').textContent = '';
    showLogin(message);
  }

  function tokenRefused() {
    signOut('The controller refused the API token (401 Unauthorized). It may have been mistyped ' +
      'or rotated: copy it again from api.token in the controller\'s data directory.');
  }

  function startSession(nodes) {
    generation += 1;
    const gen = generation;
    showApp();
    if (nodes) renderFleet(nodes);
    refreshLoop(gen);
  }

  async function refreshLoop(gen) {
    clearTimeout(timer);
    await Promise.all([refreshFleet(gen), refreshAudit(gen)]);
    // One timer at a time, however many refreshes overlapped.
    clearTimeout(timer);
    if (gen === generation) timer = setTimeout(() => refreshLoop(gen), REFRESH_MS);
  }

  // ---------- fleet ----------

  async function refreshFleet(gen) {
    try {
      const response = await api('nodes');
      if (gen !== generation) return;
      if (!response.ok) throw new Error(await errorText(response));
      const nodes = await response.json();
      if (gen !== generation) return;
      renderFleet(nodes);
      $('fleet-status').textContent = '';
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof Unauthorized) { tokenRefused(); return; }
      $('fleet-status').textContent = `Fleet not refreshed: ${err.message}`;
    }
  }

  function renderFleet(nodes) {
    const body = $('fleet-body');
    const seen = new Set();
    let online = 0;
    let total = 0;
    let free = 0;
    let devices = 0;
    for (const node of nodes) {
      if (!node || typeof node.name !== 'string') continue;
      seen.add(node.name);
      if (node.online) online += 1;
      let row = rows.get(node.name);
      if (!row) {
        row = makeRow(node.name);
        rows.set(node.name, row);
      }
      updateRow(row, node);
      body.appendChild(row.tr); // keeps the API's order (by name)
      // The devices it owns (a device another node owns is a conflict, counted nowhere).
      const storage = node.devices || [];
      if (node.online) {
        for (const d of storage) {
          if (d.error) continue;
          devices += 1;
          total += Number(d.total_bytes) || 0;
          free += Number(d.free_bytes) || 0;
        }
      }
    }
    for (const [name, row] of rows) {
      if (!seen.has(name)) { row.tr.remove(); rows.delete(name); }
    }
    let summary = `${online} of ${seen.size} known nodes online`;
    if (devices > 0) {
      summary += ` · storage on online nodes: ${bytes(free)} free of ${bytes(total)} ` +
        `(${devices} device${devices === 1 ? '' : 's'})`;
    }
    $('fleet-summary').textContent = summary;
    $('fleet-empty').hidden = seen.size > 0;
    updateNodeFilter([...seen]);
  }

  function makeRow(name) {
    const tr = document.createElement('tr');
    tr.dataset.node = name;
    const cell = (cls) => { const td = el('td', null, cls); tr.appendChild(td); return td; };
    const row = {
      tr,
      name: cell('node-name'),
      roles: cell('node-roles'),
      state: cell('node-state'),
      address: cell('node-address'),
      seen: cell('node-seen'),
      services: cell('node-services'),
      storage: cell('node-storage'),
      actions: cell('node-actions'),
      result: cell('node-result'),
      serviceNames: '',
      select: document.createElement('select'),
      buttons: [],
    };
    row.name.textContent = name;
    row.select.className = 'node-service';
    row.select.title = 'Which services the action applies to';
    row.select.appendChild(new Option('all services', ''));
    row.actions.appendChild(row.select);
    for (const [action, spec] of Object.entries(ACTIONS)) {
      const button = el('button', spec.label, `action action-${action}`);
      button.type = 'button';
      button.dataset.action = action;
      button.addEventListener('click', () => requestAction(name, action, row.select.value));
      row.buttons.push(button);
      row.actions.appendChild(button);
    }
    renderResult(row, name);
    return row;
  }

  function updateRow(row, node) {
    const report = node.last_report || null;
    const inventory = node.inventory || null;
    row.name.title = inventory && inventory.hostname ? `host name ${inventory.hostname}` : '';
    // Roles, services and devices as last known: the live report, or what the controller
    // remembers of a node that has not reported since its restart.
    const roles = node.roles || (report && report.roles) || [];
    row.roles.textContent = roles.length ? roles.join(', ') : '—';

    row.state.textContent = node.online ? 'online' : 'offline';
    row.state.className = `node-state ${node.online ? 'online' : 'offline'}`;
    row.state.title = node.since ? `since ${clock(node.since)}` : '';

    const address = (node.connection && node.connection.remote) || node.last_ip || '—';
    row.address.textContent = address;
    row.address.title = node.connection ? `agent ${node.connection.agent_version}` : 'last known address';

    const lastSeen = node.online
      ? (node.last_report_at || (node.connection && node.connection.connected_at))
      : node.since;
    row.seen.textContent = lastSeen ? (node.online ? ago(lastSeen) : `offline ${ago(lastSeen)}`) : '—';
    row.seen.title = lastSeen ? clock(lastSeen) : '';

    const services = report && report.services
      ? report.services
      : (node.services || []).map((name) => ({ name, status: 'unknown' }));
    row.services.replaceChildren(...(services.length
      ? services.map((s) => el('div', `${s.name}: ${s.status}`, `service ${s.status}`))
      : [el('span', '—')]));

    const storage = node.devices || [];
    const conflicts = (node.device_conflicts || []).map((c) => {
      const line = el('div', `device ${c.device_id}: conflict, belongs to ${c.owner}`, 'failed');
      line.title = 'refused: another node owns this device id (nodewarden-controller device assign)';
      return line;
    });
    const lines = storage.map((d) => {
      const line = d.error
        ? el('div', `device ${d.device_id}: ${d.error}`, 'failed')
        : el('div', `device ${d.device_id}: ${bytes(d.free_bytes)} free of ${bytes(d.total_bytes)}`);
      line.title = d.fragment_dir || '';
      return line;
    }).concat(conflicts);
    row.storage.replaceChildren(...(lines.length ? lines : [el('span', '—')]));

    // The service choice follows the node's declared services, keeping the operator's pick.
    const names = services.map((s) => s.name);
    if (names.join('\n') !== row.serviceNames) {
      const chosen = row.select.value;
      row.select.replaceChildren(new Option('all services', ''), ...names.map((n) => new Option(n, n)));
      row.select.value = names.includes(chosen) ? chosen : '';
      row.serviceNames = names.join('\n');
    }
    const busy = running.has(node.name);
    for (const b of row.buttons) b.disabled = busy;
  }

  // ---------- actions ----------

  function describe(node, action, service) {
    const spec = ACTIONS[action];
    return service ? `${spec.one} the service ${service} on ${node}` : `${spec.all} on ${node}`;
  }

  let confirming = false;

  function confirmAction(text) {
    const dialog = $('confirm');
    $('confirm-text').textContent = text;
    return new Promise((resolve) => {
      const done = (ok) => {
        $('confirm-ok').removeEventListener('click', yes);
        $('confirm-cancel').removeEventListener('click', no);
        dialog.removeEventListener('close', no);
        if (dialog.open) dialog.close();
        resolve(ok);
      };
      const yes = () => done(true);
      const no = () => done(false);
      $('confirm-ok').addEventListener('click', yes);
      $('confirm-cancel').addEventListener('click', no);
      dialog.addEventListener('close', no);
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  }

  async function requestAction(node, action, service) {
    if (running.has(node) || confirming) return;
    const spec = ACTIONS[action];
    const gen = generation;
    if (spec.confirm) {
      confirming = true;
      let ok = false;
      try {
        ok = await confirmAction(`${spec.label}: ${describe(node, action, service)}? ` +
          `It is recorded in the audit log as requested by ${sessionStorage.getItem(OPERATOR_KEY)}.`);
      } finally {
        confirming = false;
      }
      if (!ok || gen !== generation) return;
    }
    runAction(gen, node, action, service);
  }

  function setResult(node, state, text, details) {
    results.set(node, { state, text, details: details || [] });
    const row = rows.get(node);
    if (row) renderResult(row, node);
  }

  function renderResult(row, node) {
    const result = results.get(node);
    if (!result) {
      row.result.replaceChildren(el('span', '—'));
      row.result.className = 'node-result';
      return;
    }
    row.result.className = `node-result ${result.state}`;
    row.result.replaceChildren(
      el('div', result.text, 'result-summary'),
      ...result.details.map((d) => el('div', d, 'result-detail')));
  }

  // One line per operation of a node's result.
  function operationLines(result) {
    const lines = [];
    for (const op of result.results || []) {
      const outcome = op.outcome || {};
      if (outcome.refused) lines.push(`refused: ${outcome.refused.reason}`);
      else if (outcome.service) lines.push(`${outcome.service.ok ? 'ok' : 'failed'}: ${outcome.service.message}`);
      else if (outcome.fragments) {
        const failed = (outcome.fragments.results || []).filter((r) => r.outcome && r.outcome.failed);
        lines.push(`device ${outcome.fragments.device_id}: ${(outcome.fragments.results || []).length} fragments, ${failed.length} failed`);
      }
    }
    return lines;
  }

  function succeeded(result) {
    if (result.error) return false;
    return (result.results || []).every((op) => {
      const o = op.outcome || {};
      if (o.refused) return false;
      if (o.service) return Boolean(o.service.ok);
      if (o.fragments) return (o.fragments.results || []).every((r) => !(r.outcome && r.outcome.failed));
      return true;
    });
  }

  async function runAction(gen, node, action, service) {
    const spec = ACTIONS[action];
    const what = service ? `${spec.label.toLowerCase()} ${service}` : action;
    const body = { selector: { node }, action, requested_by: sessionStorage.getItem(OPERATOR_KEY) || '' };
    if (service) body.service = service;
    running.add(node);
    const row = rows.get(node);
    if (row) for (const b of row.buttons) b.disabled = true;
    setResult(node, 'pending', `${what}: running…`);
    let answered = false;
    try {
      const response = await api('actions', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (gen !== generation) return;
      if (!response.ok) {
        setResult(node, 'failed', `${what}: refused by the controller`, [await errorText(response)]);
        return;
      }
      await readLines(response, (event) => {
        if (gen !== generation) return;
        if (event.event === 'result' && event.result && event.result.node === node) {
          const r = event.result;
          const ok = succeeded(r);
          const path = r.path ? `via ${r.path}` : 'no path to the node';
          const details = operationLines(r);
          if (r.error) details.unshift(r.error);
          if (r.woke) details.unshift('a Wake-on-LAN packet was sent');
          setResult(node, ok ? 'ok' : 'failed', `${r.action}: ${ok ? 'ok' : 'failed'} ${path} (${r.duration_ms} ms)`, details);
          answered = true;
        }
      });
      if (!answered && gen === generation) setResult(node, 'failed', `${what}: the controller sent no result`);
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof Unauthorized) { tokenRefused(); return; }
      setResult(node, 'failed', `${what}: ${err.message}`);
    } finally {
      running.delete(node);
      if (gen === generation) {
        const r = rows.get(node);
        if (r) for (const b of r.buttons) b.disabled = false;
        // The service states and the audit log entry follow within a report and a flush.
        refreshLoop(gen);
      }
    }
  }

  // ---------- fragment deletion ----------

  // `fragment_id device_id` pairs from the text, one per line (blank and `#` lines skipped).
  // Ids stay text: the controller validates them, and refuses the whole batch for one bad id.
  function parsePairs(text) {
    const pairs = [];
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i += 1) {
      const line = lines[i].trim();
      if (!line || line.startsWith('#')) continue;
      const words = line.split(/\s+/);
      if (words.length !== 2) {
        throw new Error(`line ${i + 1}: expected "fragment_id device_id", got ${words.length} word(s)`);
      }
      pairs.push(words);
    }
    if (!pairs.length) throw new Error('no fragment pairs');
    return pairs;
  }

  let deleting = false;

  async function deleteFragments(event) {
    event.preventDefault();
    if (deleting || confirming) return;
    const gen = generation;
    const status = $('fragments-status');
    const list = $('fragments-results');
    let pairs;
    try {
      pairs = parsePairs($('fragments-pairs').value);
    } catch (err) {
      status.textContent = err.message;
      return;
    }
    const devices = [...new Set(pairs.map((p) => p[1]))];
    confirming = true;
    let ok = false;
    try {
      ok = await confirmAction(`Delete ${pairs.length} fragment(s) on device(s) ${devices.join(', ')}? ` +
        'The files cannot be restored. It is recorded in the audit log as requested by ' +
        `${sessionStorage.getItem(OPERATOR_KEY)}.`);
    } finally {
      confirming = false;
    }
    if (!ok || gen !== generation) return;
    deleting = true;
    $('fragments-submit').disabled = true;
    status.textContent = `deleting ${pairs.length} fragment(s)…`;
    list.replaceChildren();
    try {
      const response = await api('actions', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
          action: 'delete-fragments',
          pairs,
          requested_by: sessionStorage.getItem(OPERATOR_KEY) || '',
        }),
      });
      if (gen !== generation) return;
      if (!response.ok) {
        status.textContent = `refused by the controller, nothing was deleted: ${await errorText(response)}`;
        return;
      }
      let failed = 0;
      let answered = 0;
      await readLines(response, (line) => {
        if (gen !== generation || line.event !== 'result' || !line.result) return;
        const r = line.result;
        const good = succeeded(r);
        if (!good) failed += 1;
        answered += 1;
        const path = r.path ? `via ${r.path}` : 'no path to the node';
        const details = operationLines(r);
        if (r.error) details.unshift(r.error);
        const item = el('li', null, good ? 'ok' : 'failed');
        item.append(el('div', `${r.node}: ${good ? 'ok' : 'failed'} ${path} (${r.duration_ms} ms)`, 'result-summary'),
          ...details.map((d) => el('div', d, 'result-detail')));
        list.appendChild(item);
      });
      if (gen !== generation) return;
      status.textContent = answered === 0 ? 'the controller sent no result'
        : failed ? `${failed} of ${answered} node(s) failed` : '';
      if (!failed && answered) $('fragments-pairs').value = '';
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof Unauthorized) { tokenRefused(); return; }
      status.textContent = err.message;
    } finally {
      deleting = false;
      if (gen === generation) {
        $('fragments-submit').disabled = false;
        refreshAudit(gen);
      }
    }
  }

  // ---------- audit log ----------

  function updateNodeFilter(names) {
    const select = $('audit-node');
    const current = [...select.options].slice(1).map((o) => o.value);
    const wanted = [...names].sort();
    if (current.join('\n') === wanted.join('\n')) return;
    const chosen = select.value;
    select.replaceChildren(new Option('all nodes', ''), ...wanted.map((n) => new Option(n, n)));
    if (chosen && !wanted.includes(chosen)) select.appendChild(new Option(chosen, chosen));
    select.value = chosen;
  }

  async function refreshAudit(gen) {
    const params = new URLSearchParams({ limit: $('audit-limit').value });
    if ($('audit-node').value) params.set('node', $('audit-node').value);
    try {
      const response = await api(`events?${params}`);
      if (gen !== generation) return;
      if (!response.ok) throw new Error(await errorText(response));
      const events = await response.json();
      if (gen !== generation) return;
      renderAudit(events);
      $('audit-status').textContent = events.length ? '' : 'No entries yet.';
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof Unauthorized) { tokenRefused(); return; }
      $('audit-status').textContent = `Audit log not refreshed: ${err.message}`;
    }
  }

  function renderAudit(events) {
    const rowsOut = events.map((e) => {
      const tr = document.createElement('tr');
      tr.dataset.eventId = String(e.id);
      tr.className = `event ${e.kind}${e.result === 'failed' ? ' failed' : ''}`;
      const time = el('td', clock(e.at_ms), 'event-time');
      time.title = new Date(e.at_ms).toISOString();
      tr.append(
        time,
        el('td', e.node, 'event-node'),
        el('td', e.kind === 'operation' ? e.action : e.kind, 'event-what'),
        el('td', e.actor || '', 'event-actor'),
        el('td', e.path || '', 'event-path'),
        el('td', e.result || '', 'event-result'),
        el('td', e.duration_ms === null || e.duration_ms === undefined ? '' : `${e.duration_ms} ms`, 'event-duration'),
        el('td', e.detail || '', 'event-detail'));
      return tr;
    });
    $('audit-body').replaceChildren(...rowsOut);
  }

  // ---------- start ----------

  async function signIn(event) {
    event.preventDefault();
    const token = $('login-token').value.trim();
    const operator = $('login-operator').value.trim();
    if (!token || !operator) {
      showLogin('Both the API token and your name are needed.');
      return;
    }
    if (/[\u0000-\u001f\u007f]/.test(operator) || operator.length > 128) {
      showLogin('Your name must be 1 to 128 characters without control characters.');
      return;
    }
    sessionStorage.setItem(OPERATOR_KEY, operator);
    sessionStorage.setItem(TOKEN_KEY, token);
    const gen = generation;
    $('login-submit').disabled = true;
    try {
      const response = await api('nodes');
      if (!response.ok) throw new Error(await errorText(response));
      const nodes = await response.json();
      // A named token acts as its operator whatever name was typed: show that name, since
      // it is what the audit log will record.
      const who = await api('whoami');
      if (who.ok) {
        const bound = (await who.json()).operator;
        if (typeof bound === 'string' && bound) sessionStorage.setItem(OPERATOR_KEY, bound);
      }
      if (gen !== generation) return;
      $('login-token').value = '';
      startSession(nodes);
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      if (err instanceof Unauthorized) {
        showLogin('The controller refused this token (401 Unauthorized). Copy it again from ' +
          'api.token in the controller\'s data directory.');
      } else {
        showLogin(`The controller did not answer: ${err.message}`);
      }
    } finally {
      $('login-submit').disabled = false;
    }
  }

  function start() {
    $('login-form').addEventListener('submit', signIn);
    $('signout').addEventListener('click', () => signOut());
    $('audit-node').addEventListener('change', () => refreshAudit(generation));
    $('audit-limit').addEventListener('change', () => refreshAudit(generation));
    $('fragments-form').addEventListener('submit', deleteFragments);
    if (sessionStorage.getItem(TOKEN_KEY)) startSession(null);
    else showLogin();
  }

  start();
})();
