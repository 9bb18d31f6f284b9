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
    $('node-view').hidden = true;
    $('device-fragments-view').hidden = true;
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
    const node = currentNode();
    const device = currentDevice();
    $('app-view').hidden = node !== null || device !== null;
    $('node-view').hidden = node === null;
    $('device-fragments-view').hidden = device === null;
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
    selected.clear();
    groupRows.clear();
    latest.clear();
    if (streamAbort) streamAbort.abort();
    streamAbort = null;
    streaming = false;
    $('live').textContent = '';
    alerts = [];
    fragmentAudits = [];
    $('problems-list').replaceChildren();
    $('problems-summary').textContent = '';
    $('problems-status').textContent = '';
    clearNodeView();
    links = null;
    $('filter-text').value = '';
    $('fleet-shown').textContent = '';
    updateBulk();
    $('fleet-body').replaceChildren();
    $('audit-body').replaceChildren();
    $('fragments-results').replaceChildren();
    $('fragments-status').textContent = '';
    $('fragments-pairs').value = '';
    $('fragments-check').textContent = '';
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
    route();
    refreshLoop(gen);
  }

  async function refreshLoop(gen) {
    clearTimeout(timer);
    // The fleet comes from the live stream while it is open; polled otherwise.
    if (gen === generation && !streamAbort) openStream(gen);
    await Promise.all([streaming ? null : refreshFleet(gen), refreshAudit(gen), refreshAlerts(gen),
      currentNode() !== null ? refreshNode(gen) : null]);
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

  // Fleet view state: the column sorted on and its direction, the nodes selected for a bulk
  // action (kept across refreshes; a node that leaves the fleet leaves the selection).
  const view = { sort: 'name', dir: 1 };
  const selected = new Set();
  // Group heading rows by role, kept so that their checkboxes survive refreshes.
  const groupRows = new Map();

  function percent(used, total) {
    const t = Number(total) || 0;
    return t > 0 ? (100 * (Number(used) || 0)) / t : null;
  }

  function renderFleet(nodes) {
    const seen = new Set();
    let online = 0;
    let total = 0;
    let free = 0;
    let devices = 0;
    for (const node of nodes) {
      if (!node || typeof node.name !== 'string') continue;
      seen.add(node.name);
      latest.set(node.name, node);
      if (node.online) online += 1;
      let row = rows.get(node.name);
      if (!row) {
        row = makeRow(node.name);
        rows.set(node.name, row);
      }
      updateRow(row, node);
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
      if (!seen.has(name)) { row.tr.remove(); rows.delete(name); selected.delete(name); latest.delete(name); }
    }
    let summary = `${online} of ${seen.size} known nodes online`;
    if (devices > 0) {
      summary += ` · storage on online nodes: ${bytes(free)} free of ${bytes(total)} ` +
        `(${devices} device${devices === 1 ? '' : 's'})`;
    }
    $('fleet-summary').textContent = summary;
    $('fleet-empty').hidden = seen.size > 0;
    updateNodeFilter([...seen]);
    arrangeFleet();
    renderProblems();
  }

  // Whether a row passes the filters (role, state, free text).
  function shown(row) {
    const role = $('filter-role').value;
    if (role === 'none' ? row.roleList.length > 0 : role && !row.roleList.includes(role)) return false;
    const state = $('filter-state').value;
    if (state && (state === 'online') !== row.online) return false;
    const words = $('filter-text').value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    return words.every((w) => row.haystack.includes(w));
  }

  function compareRows(a, b) {
    const x = a.keys[view.sort];
    const y = b.keys[view.sort];
    // Missing figures (an offline node's load) go last whichever the direction.
    if (x === null || x === undefined) return (y === null || y === undefined) ? a.nodeName.localeCompare(b.nodeName) : 1;
    if (y === null || y === undefined) return -1;
    const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
    return c !== 0 ? c * view.dir : a.nodeName.localeCompare(b.nodeName);
  }

  // Puts the rows in the table: filtered, sorted, and under a heading per role when grouped.
  function arrangeFleet() {
    const visible = [...rows.values()].filter(shown).sort(compareRows);
    const out = [];
    if ($('group-role').checked) {
      const groups = new Map();
      for (const row of visible) {
        const keys = row.roleList.length ? row.roleList : ['no role'];
        for (const k of keys) {
          if (!groups.has(k)) groups.set(k, []);
          groups.get(k).push(row);
        }
      }
      for (const k of [...groups.keys()].sort()) {
        const members = groups.get(k);
        let group = groupRows.get(k);
        if (!group) {
          const tr = el('tr', null, 'group');
          tr.dataset.group = k;
          const th = el('th', null);
          th.colSpan = 13;
          const box = document.createElement('input');
          box.type = 'checkbox';
          box.className = 'select-group';
          box.title = `Select every ${k} node shown`;
          group = { tr, box, label: el('span', null, 'group-name'), members: [] };
          const g = group;
          box.addEventListener('change', () => {
            for (const r of g.members) setSelected(r.nodeName, box.checked);
            arrangeFleet();
          });
          th.append(box, group.label);
          tr.appendChild(th);
          groupRows.set(k, group);
        }
        group.members = members;
        group.label.textContent = ` ${k} (${members.length})`;
        group.box.checked = members.every((r) => selected.has(r.nodeName));
        out.push(group.tr);
        // A node with two roles is listed under each; its row element can sit in one place
        // only, so the second listing is a copy without controls.
        for (const row of members) {
          if (out.includes(row.tr)) out.push(copyRow(row));
          else out.push(row.tr);
        }
      }
    } else {
      for (const row of visible) out.push(row.tr);
    }
    // Rows are moved only when the order changed, so an open control keeps its focus.
    const body = $('fleet-body');
    const current = [...body.children];
    if (current.length !== out.length || current.some((tr, i) => tr !== out[i])) body.replaceChildren(...out);
    const n = rows.size;
    $('fleet-shown').textContent = visible.length === n ? '' : `${visible.length} of ${n} nodes shown`;
    for (const th of document.querySelectorAll('#fleet-table th[data-sort]')) {
      if (th.dataset.sort === view.sort) th.setAttribute('aria-sort', view.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
    const box = $('select-shown');
    box.checked = visible.length > 0 && visible.every((r) => selected.has(r.nodeName));
    updateBulk();
  }

  function copyRow(row) {
    const tr = row.tr.cloneNode(true);
    tr.classList.add('copy');
    delete tr.dataset.node;
    tr.dataset.copyOf = row.nodeName;
    for (const c of tr.querySelectorAll('input, select, button')) c.remove();
    return tr;
  }

  function setSelected(name, on) {
    if (on) selected.add(name); else selected.delete(name);
    const row = rows.get(name);
    if (row) row.check.checked = on;
  }

  function updateBulk() {
    const n = selected.size;
    $('bulk-count').textContent = `${n} node${n === 1 ? '' : 's'} selected`;
    const busy = [...selected].some((name) => running.has(name));
    for (const b of document.querySelectorAll('.bulk-action')) b.disabled = n === 0 || busy;
    $('bulk-clear').disabled = n === 0;
  }

  function makeRow(name) {
    const tr = document.createElement('tr');
    tr.dataset.node = name;
    const cell = (cls) => { const td = el('td', null, cls); tr.appendChild(td); return td; };
    const row = {
      tr,
      nodeName: name,
      pick: cell('node-pick'),
      name: cell('node-name'),
      roles: cell('node-roles'),
      link: cell('node-link'),
      load: cell('node-load'),
      memory: cell('node-memory'),
      disk: cell('node-disk'),
      storage: cell('node-storage'),
      services: cell('node-services'),
      address: cell('node-address'),
      seen: cell('node-seen'),
      actions: cell('node-actions'),
      result: cell('node-result'),
      state: el('span', null, 'node-state'),
      since: el('div', null, 'node-since'),
      check: document.createElement('input'),
      serviceNames: '',
      select: document.createElement('select'),
      buttons: [],
      keys: {},
      roleList: [],
      online: false,
      haystack: name.toLowerCase(),
    };
    row.check.type = 'checkbox';
    row.check.className = 'node-check';
    row.check.title = `Select ${name}`;
    row.check.checked = selected.has(name);
    row.check.addEventListener('change', () => { setSelected(name, row.check.checked); arrangeFleet(); });
    row.pick.appendChild(row.check);
    row.link.append(row.state, row.since);
    const link = el('a', name, 'node-link-page');
    link.href = `#node/${encodeURIComponent(name)}`;
    link.title = `${name}: charts, devices, services and events`;
    row.name.appendChild(link);
    row.select.className = 'node-service';
    row.select.title = 'Which services the action applies to';
    row.select.appendChild(new Option('all services', ''));
    row.actions.appendChild(row.select);
    for (const [action, spec] of Object.entries(ACTIONS)) {
      const button = el('button', spec.label, `action action-${action}`);
      button.type = 'button';
      button.dataset.action = action;
      button.addEventListener('click', () => requestAction([name], action, row.select.value));
      row.buttons.push(button);
      row.actions.appendChild(button);
    }
    renderResult(row, name);
    return row;
  }

  // "37 %" with the figures behind it as the title; "—" when unknown.
  function usage(td, used, total, what) {
    const p = percent(used, total);
    if (p === null) {
      td.textContent = '—';
      td.title = `${what}: not reported yet`;
      td.className = td.className.replace(/ (high|full)$/, '');
      return null;
    }
    td.textContent = `${p.toFixed(0)} % (${bytes(used)} of ${bytes(total)})`;
    td.title = `${what}: ${bytes(used)} used of ${bytes(total)}`;
    td.className = td.className.replace(/ (high|full)$/, '') + (p >= 95 ? ' full' : p >= 85 ? ' high' : '');
    return p;
  }

  function updateRow(row, node) {
    const report = node.last_report || null;
    const inventory = node.inventory || null;
    const health = report && report.health ? report.health : null;
    row.name.title = inventory && inventory.hostname ? `host name ${inventory.hostname}` : '';
    // Roles, services and devices as last known: the live report, or what the controller
    // remembers of a node that has not reported since its restart.
    const roles = (node.roles && node.roles.length ? node.roles : (report && report.roles)) || [];
    row.roleList = roles.map(String);
    row.roles.textContent = roles.length ? roles.join(', ') : '—';

    row.online = Boolean(node.online);
    row.state.textContent = node.online ? 'online' : 'offline';
    row.state.className = `node-state ${node.online ? 'online' : 'offline'}`;
    row.since.textContent = node.since ? `since ${ago(node.since)}` : '';
    row.since.title = node.since ? clock(node.since) : '';

    // Load against cores: "load1 / CPUs", amber above one task per CPU, red above two (the
    // NodeCpuSaturated alert's line); sorted by load per CPU where the count is known.
    const load = health && node.online ? Number(health.load1) : null;
    const cpus = report && Number(report.cpus) > 0 ? Number(report.cpus) : null;
    const known = load !== null && !Number.isNaN(load);
    row.load.textContent = !known ? '—' : (cpus ? `${load.toFixed(2)} / ${cpus}` : load.toFixed(2));
    row.load.title = !known ? 'no report from this node on this controller run'
      : cpus ? `1-minute load average on ${cpus} CPUs` : '1-minute load average (CPU count not reported)';
    row.load.className = 'node-load' + (known && cpus ? (load > 2 * cpus ? ' full' : load > cpus ? ' high' : '') : '');
    const memory = health && node.online
      ? usage(row.memory, health.memory_used_bytes, health.memory_total_bytes, 'memory')
      : usage(row.memory, 0, 0, 'memory');
    const disk = health && node.online
      ? usage(row.disk, health.root_fs_used_bytes, health.root_fs_total_bytes, 'root filesystem')
      : usage(row.disk, 0, 0, 'root filesystem');

    const address = (node.connection && node.connection.remote) || node.last_ip || '—';
    row.address.textContent = address;
    row.address.title = node.connection
      ? `agent ${node.connection.agent_version}`
      : (node.held_by ? `linked to controller ${node.held_by}` : 'last known address');
    if (node.held_by) row.address.textContent = `${address} (via ${node.held_by})`;
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
    let fullest = null;
    const lines = storage.map((d) => {
      if (d.error) {
        const line = el('div', `device ${d.device_id}: ${d.error}`, 'failed');
        line.title = d.fragment_dir || '';
        return line;
      }
      const p = percent(d.free_bytes, d.total_bytes);
      if (p !== null && (fullest === null || p < fullest)) fullest = p;
      const line = el('div', `device ${d.device_id}: ${bytes(d.free_bytes)} free of ${bytes(d.total_bytes)}` +
        (p === null ? '' : ` (${p.toFixed(0)} %)`), p !== null && p < 10 ? 'device low' : 'device');
      line.title = d.fragment_dir || '';
      return line;
    }).concat(conflicts);
    row.storage.replaceChildren(...(lines.length ? lines : [el('span', '—')]));

    row.keys = {
      name: node.name,
      roles: roles.join(', ') || null,
      state: (node.online ? 1e15 : 0) + (Number(node.since) || 0),
      load: !known ? null : (cpus ? load / cpus : load),
      memory,
      disk,
      storage: fullest,
      services: services.map((s) => `${s.status} ${s.name}`).sort().join(' ') || null,
      address: address === '—' ? null : String(address),
      seen: lastSeen || null,
    };
    row.haystack = [node.name, roles.join(' '), String(address), inventory && inventory.hostname,
      ...services.map((s) => `${s.name} ${s.status}`), node.online ? 'online' : 'offline']
      .filter(Boolean).join(' ').toLowerCase();

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

  function describe(nodes, action, service) {
    const spec = ACTIONS[action];
    const on = nodes.length === 1 ? nodes[0] : `${nodes.length} nodes (${nodes.join(', ')})`;
    return service ? `${spec.one} the service ${service} on ${on}` : `${spec.all} on ${on}`;
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

  // One action on one or several nodes: one confirmation for all of them.
  async function requestAction(nodes, action, service) {
    if (!nodes.length || nodes.some((n) => running.has(n)) || confirming) return;
    const spec = ACTIONS[action];
    const gen = generation;
    if (spec.confirm) {
      confirming = true;
      let ok = false;
      try {
        ok = await confirmAction(`${spec.label}: ${describe(nodes, action, service)}? ` +
          `It is recorded in the audit log as requested by ${sessionStorage.getItem(OPERATOR_KEY)}.`);
      } finally {
        confirming = false;
      }
      if (!ok || gen !== generation) return;
    }
    runAction(gen, nodes, action, service);
  }

  function bulkAction(action) {
    requestAction([...selected].sort(), action, '');
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

  function setBusy(nodes, busy) {
    for (const node of nodes) {
      if (busy) running.add(node); else running.delete(node);
      const row = rows.get(node);
      if (row) for (const b of row.buttons) b.disabled = busy;
    }
    updateBulk();
  }

  // Runs the action on `nodes` in one request; each node's result is shown in its row as the
  // controller streams it.
  async function runAction(gen, nodes, action, service) {
    const spec = ACTIONS[action];
    const what = service ? `${spec.label.toLowerCase()} ${service}` : action;
    const selector = nodes.length === 1 ? { node: nodes[0] } : { nodes };
    const body = { selector, action, requested_by: sessionStorage.getItem(OPERATOR_KEY) || '' };
    if (service) body.service = service;
    setBusy(nodes, true);
    for (const node of nodes) setResult(node, 'pending', `${what}: running…`);
    const answered = new Set();
    try {
      const response = await api('actions', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (gen !== generation) return;
      if (!response.ok) {
        const why = await errorText(response);
        for (const node of nodes) setResult(node, 'failed', `${what}: refused by the controller`, [why]);
        return;
      }
      await readLines(response, (event) => {
        if (gen !== generation) return;
        if (event.event === 'result' && event.result && nodes.includes(event.result.node)) {
          const r = event.result;
          const ok = succeeded(r);
          const path = r.path ? `via ${r.path}` : 'no path to the node';
          const details = operationLines(r);
          if (r.error) details.unshift(r.error);
          if (r.woke) details.unshift('a Wake-on-LAN packet was sent');
          setResult(r.node, ok ? 'ok' : 'failed', `${r.action}: ${ok ? 'ok' : 'failed'} ${path} (${r.duration_ms} ms)`, details);
          answered.add(r.node);
        }
      });
      if (gen !== generation) return;
      for (const node of nodes) {
        if (!answered.has(node)) setResult(node, 'failed', `${what}: the controller sent no result`);
      }
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof Unauthorized) { tokenRefused(); return; }
      for (const node of nodes) {
        if (!answered.has(node)) setResult(node, 'failed', `${what}: ${err.message}`);
      }
    } finally {
      if (gen === generation) {
        setBusy(nodes, false);
        // The service states and the audit log entry follow within a report and a flush.
        refreshLoop(gen);
      } else {
        for (const node of nodes) running.delete(node);
      }
    }
  }

  // ---------- fragment deletion ----------

  const MAX_FRAGMENT_ID = 18446744073709551615n; // u64
  const MAX_DEVICE_ID = 4294967295n; // u32

  // The controller's rule for an id (shared/src/ops.rs, parse_decimal): decimal digits only, no
  // sign or space, no leading zero, within `max`. The problem with `text`, or null.
  function idProblem(text, what, max) {
    if (!/^[0-9]+$/.test(text)) return `${what} ${JSON.stringify(text)} is not a non-negative decimal integer (only the digits 0-9)`;
    if (text.length > 1 && text.startsWith('0')) return `${what} ${JSON.stringify(text)} has a leading zero`;
    if (text.length > 20 || BigInt(text) > max) return `${what} ${text} is too large (at most ${max})`;
    return null;
  }

  // `fragment_id device_id` pairs from the text, one per line (blank and `#` lines skipped),
  // every line checked as the controller would: the problems, one per bad line, and the pairs.
  function checkLines(text) {
    const pairs = [];
    const problems = [];
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i += 1) {
      const line = lines[i].trim();
      if (!line || line.startsWith('#')) continue;
      const words = line.split(/\s+/);
      if (words.length !== 2) {
        problems.push(`line ${i + 1}: expected "fragment_id device_id", got ${words.length} word(s)`);
        continue;
      }
      const problem = idProblem(words[0], 'fragment id', MAX_FRAGMENT_ID) ||
        idProblem(words[1], 'device id', MAX_DEVICE_ID);
      if (problem) problems.push(`line ${i + 1}: ${problem}`);
      else pairs.push(words);
    }
    if (!pairs.length && !problems.length) problems.push('no fragment pairs');
    return { pairs, problems };
  }

  // Pairs to delete, or an error listing every bad line (then nothing is offered for deletion).
  function parsePairs(text) {
    const { pairs, problems } = checkLines(text);
    if (problems.length) {
      const more = problems.length > 5 ? ` (and ${problems.length - 5} more)` : '';
      throw new Error(`nothing to delete until every line is a valid pair: ${problems.slice(0, 5).join('; ')}${more}`);
    }
    return pairs;
  }

  // As the operator types: the lines that would be refused, and the button only for a valid list.
  function checkPairs() {
    const text = $('fragments-pairs').value;
    const { pairs, problems } = checkLines(text);
    const bad = text.trim() ? problems : [];
    $('fragments-submit').disabled = deleting || bad.length > 0 || pairs.length === 0;
    $('fragments-check').textContent = bad.length
      ? bad.slice(0, 5).join('; ') + (bad.length > 5 ? ` (and ${bad.length - 5} more)` : '')
      : (pairs.length ? `${pairs.length} valid pair(s)` : '');
    $('fragments-check').className = bad.length ? 'error' : 'hint';
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
      if (!failed && answered) { $('fragments-pairs').value = ''; checkPairs(); }
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof Unauthorized) { tokenRefused(); return; }
      status.textContent = err.message;
    } finally {
      deleting = false;
      if (gen === generation) {
        checkPairs();
        refreshAudit(gen);
      }
    }
  }

  // ---------- live updates ----------

  // The open stream's abort handle (null: none open), and whether it has answered.
  let streamAbort = null;
  let streaming = false;
  const STREAM_RETRY_MS = 5000;

  // Calls onEvent(name, data) for each server-sent event of the body as it arrives
  // (comment lines, the keep-alives, are skipped).
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        let name = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') name = text;
          else if (field === 'data') data.push(text);
        }
        if (data.length) onEvent(name, data.join('\n'));
      }
    }
  }

  // GET /api/v1/stream with the token (fetch, since EventSource cannot send a header): each
  // `nodes` event redraws the fleet, the problems and the node page's facts. When it fails or
  // ends, the fleet is polled again and the stream reopened after a pause.
  async function openStream(gen) {
    const abort = new AbortController();
    streamAbort = abort;
    try {
      const response = await api('stream', { signal: abort.signal });
      if (gen !== generation) return;
      if (!response.ok) throw new Error(await errorText(response));
      streaming = true;
      $('live').textContent = 'live updates';
      $('live').className = 'live on';
      await readEvents(response, (name, data) => {
        if (gen !== generation || name !== 'nodes') return;
        renderFleet(JSON.parse(data));
        $('fleet-status').textContent = '';
        const node = currentNode();
        if (node !== null) renderNodeFacts(node);
      });
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof Unauthorized) { tokenRefused(); return; }
    } finally {
      if (streamAbort === abort) { streamAbort = null; streaming = false; }
    }
    if (gen !== generation) return;
    $('live').textContent = 'polling every 3 s (live stream reconnecting)';
    $('live').className = 'live off';
    setTimeout(() => { if (gen === generation && !streamAbort) openStream(gen); }, STREAM_RETRY_MS);
  }

  // ---------- problems ----------

  // Devices with less free space than this share are "nearly full".
  const LOW_FREE_PERCENT = 10;
  // The alerts Alertmanager says are firing (GET /api/v1/alerts), as last fetched.
  let alerts = [];
  // Every device's last fragment audit (GET /api/v1/fragments/audit), for the problems view.
  let fragmentAudits = [];

  async function refreshAlerts(gen) {
    try {
      const response = await api('alerts');
      if (gen !== generation) return;
      if (!response.ok) throw new Error(await errorText(response));
      const list = await response.json();
      if (gen !== generation) return;
      alerts = Array.isArray(list) ? list : [];
      // Every device's last fragment audit (held by the controller, no database read); 503
      // without a [dfs] database: no fragment problems to show.
      const audits = await api('fragments/audit');
      if (gen !== generation) return;
      const held = audits.ok ? await audits.json() : [];
      if (gen !== generation) return;
      fragmentAudits = Array.isArray(held) ? held : [];
      $('problems-status').textContent = '';
      renderProblems();
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof Unauthorized) { tokenRefused(); return; }
      $('problems-status').textContent = `Alerts not refreshed: ${err.message}`;
    }
  }

  function nodeLink(name) {
    const a = el('a', name, 'problem-node');
    a.href = `#node/${encodeURIComponent(name)}`;
    return a;
  }

  // One list: offline nodes, nearly full or unmeasurable devices, ownership conflicts, then the
  // firing alerts (critical first); each node named links to its page.
  function renderProblems() {
    const items = [];
    const add = (kind, node, text, title) => {
      const li = el('li', null, `problem ${kind}`);
      li.dataset.kind = kind;
      if (node) { li.dataset.node = node; li.append(nodeLink(node), document.createTextNode(': ')); }
      li.append(el('span', text, 'problem-text'));
      if (title) li.title = title;
      items.push(li);
    };
    for (const name of [...latest.keys()].sort()) {
      const node = latest.get(name);
      if (!node.online) add('offline', name, `offline since ${node.since ? ago(node.since) : 'ever'}`, node.since ? clock(node.since) : '');
      for (const d of node.devices || []) {
        if (d.error) { add('device-error', name, `device ${d.device_id} cannot be measured: ${d.error}`, d.fragment_dir); continue; }
        const p = percent(d.free_bytes, d.total_bytes);
        if (p !== null && p < LOW_FREE_PERCENT) {
          add('device-full', name, `device ${d.device_id} nearly full: ${p.toFixed(1)} % free (${bytes(d.free_bytes)} of ${bytes(d.total_bytes)})`, d.fragment_dir);
        }
      }
      for (const c of node.device_conflicts || []) {
        add('conflict', name, `reports device ${c.device_id}, which belongs to ${c.owner} (refused until an operator runs nodewarden-controller device assign)`);
      }
    }
    for (const v of [...fragmentAudits].sort((a, b) => a.device_id - b.device_id)) {
      const text = fragmentProblems(v.audit || {});
      if (!text) continue;
      add('fragments', v.node, `device ${v.device_id}: ${text} `);
      const li = items[items.length - 1];
      li.dataset.device = String(v.device_id);
      li.append(fragmentsLink(v.device_id));
    }
    const rank = { critical: 0, warning: 1, info: 2 };
    const sorted = [...alerts].sort((a, b) => ((rank[a.severity] ?? 3) - (rank[b.severity] ?? 3)) ||
      String(a.alertname).localeCompare(String(b.alertname)));
    for (const a of sorted) {
      const known = latest.has(a.node);
      const text = `alert ${a.alertname} (${a.severity || 'no severity'})${a.summary ? ': ' + a.summary : ''}` +
        (a.starts_at ? `, since ${a.starts_at}` : '');
      if (known) add('alert', a.node, text, a.description);
      else add('alert', null, `${a.node}: ${text}`, a.description);
      items[items.length - 1].classList.add(`severity-${String(a.severity).replace(/[^a-z]/g, '')}`);
    }
    $('problems-list').replaceChildren(...items);
    const count = (k) => items.filter((i) => i.dataset.kind === k).length;
    $('problems-summary').textContent = items.length
      ? `${count('offline')} offline · ${count('device-full') + count('device-error')} device(s) nearly full or unmeasured · ` +
        `${count('conflict')} conflict(s) · ${count('alert')} firing alert(s)` +
        (count('fragments') ? ` · ${count('fragments')} device(s) with fragment problems` : '')
      : 'No problem: every node online, every device over 10 % free, no conflict, no firing alert.';
  }

  // ---------- node page ----------

  // The last /nodes answer by name (the node page's facts, devices and services).
  const latest = new Map();
  // The configured Grafana and Prometheus URLs (GET /api/v1/console), once per session.
  let links = null;
  // uPlot charts by element id, with the series labels they were made for.
  const charts = new Map();
  const COLORS = ['#0b5cad', '#b42318', '#1a7f37', '#9a6700', '#6e40c9', '#0f766e'];

  // The node named by the page's address (`#node/NAME`), or null for the fleet.
  function currentNode() {
    const m = /^#node\/(.+)$/.exec(location.hash);
    if (!m) return null;
    try { return decodeURIComponent(m[1]); } catch (_) { return null; }
  }

  function clearNodeView() {
    for (const { plot } of charts.values()) plot.destroy();
    charts.clear();
    for (const id of ['node-title', 'node-facts', 'node-status', 'node-points']) $(id).textContent = '';
    for (const id of ['node-links', 'node-services', 'node-devices-body', 'node-events-body']) $(id).replaceChildren();
    for (const id of ['device-fragments-title', 'device-fragments-facts', 'device-fragments-status', 'device-fragments-note']) $(id).textContent = '';
    $('device-fragments-body').replaceChildren();
  }

  function route() {
    if (!sessionStorage.getItem(TOKEN_KEY)) return;
    clearNodeView();
    showApp();
    const node = currentNode();
    if (node !== null) {
      $('node-title').textContent = node;
      document.title = `${node} · nodewarden console`;
      renderNodeFacts(node);
      refreshNode(generation);
    } else if (currentDevice() !== null) {
      const device = currentDevice();
      $('device-fragments-title').textContent = String(device);
      document.title = `device ${device} fragments · nodewarden console`;
      refreshDeviceFragments(generation);
    } else {
      document.title = 'nodewarden console';
    }
  }

  // Draws `data` ([x seconds, ...series]) in the element `id`; the chart is made again when
  // its series change (a device added), else only its data is replaced.
  function chart(id, labels, data) {
    const target = $(id);
    target.dataset.points = String(data[0].length);
    const key = labels.join('\n');
    const existing = charts.get(id);
    if (existing && existing.key === key) { existing.plot.setData(data); return; }
    if (existing) existing.plot.destroy();
    if (typeof uPlot !== 'function') { target.textContent = 'the chart library did not load'; return; }
    const opts = {
      width: Math.max(260, Math.min(target.clientWidth || 600, 900)),
      height: 170,
      scales: { x: { time: true } },
      axes: [{}, { size: 60 }],
      series: [{}].concat(labels.map((label, i) => ({
        label, stroke: COLORS[i % COLORS.length], width: 2, points: { show: true, size: 4 },
      }))),
    };
    charts.set(id, { key, plot: new uPlot(opts, data, target) });
  }

  function renderCharts(points) {
    const x = points.map((p) => p.at_ms / 1000);
    const pct = (used, total) => (Number(total) > 0 ? (100 * Number(used)) / Number(total) : null);
    chart('chart-load', ['load1'], [x, points.map((p) => p.load1)]);
    chart('chart-memory', ['memory %'], [x, points.map((p) => pct(p.memory_used_bytes, p.memory_total_bytes))]);
    chart('chart-disk', ['root disk %'], [x, points.map((p) => pct(p.root_fs_used_bytes, p.root_fs_total_bytes))]);
    const ids = [...new Set(points.flatMap((p) => (p.devices || []).map((d) => d.device_id)))].sort((a, b) => a - b);
    chart('chart-storage', ids.length ? ids.map((d) => `device ${d}`) : ['no device'],
      [x].concat(ids.length ? ids.map((id) => points.map((p) => {
        const d = (p.devices || []).find((v) => v.device_id === id);
        return d ? pct(d.free_bytes, d.total_bytes) : null;
      })) : [points.map(() => null)]));
  }

  // The same charts from `GET /api/v1/nodes/{name}/prometheus` (one time grid for all).
  function renderPrometheusCharts(c) {
    const x = Array.isArray(c.times) ? c.times : [];
    const line = (v) => (Array.isArray(v) && v.length === x.length ? v : x.map(() => null));
    chart('chart-load', ['load1'], [x, line(c.load1)]);
    chart('chart-memory', ['memory %'], [x, line(c.memory)]);
    chart('chart-disk', ['root disk %'], [x, line(c.disk)]);
    const ids = Object.keys(c.storage || {}).sort((a, b) => Number(a) - Number(b));
    chart('chart-storage', ids.length ? ids.map((d) => `device ${d}`) : ['no device'],
      [x].concat(ids.length ? ids.map((id) => line(c.storage[id])) : [x.map(() => null)]));
  }

  function renderNodeFacts(name) {
    const node = latest.get(name);
    if (!node) {
      $('node-facts').textContent = rows.size ? `${name} is not a node the controller knows.` : '';
      return;
    }
    const report = node.last_report || null;
    const roles = (node.roles && node.roles.length ? node.roles : (report && report.roles)) || [];
    const address = (node.connection && node.connection.remote) || node.last_ip || 'no address';
    const host = node.inventory && node.inventory.hostname ? ` · host ${node.inventory.hostname}` : '';
    $('node-facts').textContent = `${node.online ? 'online' : 'offline'} since ${node.since ? clock(node.since) : '—'}` +
      ` · roles ${roles.length ? roles.join(', ') : 'none'} · ${address}${host}`;
    const conflicts = new Map((node.device_conflicts || []).map((c) => [c.device_id, c.owner]));
    const devices = (node.devices || []).map((d) => {
      const tr = document.createElement('tr');
      tr.dataset.device = String(d.device_id);
      const p = percent(d.free_bytes, d.total_bytes);
      tr.append(el('td', d.device_id), el('td', d.fragment_dir || ''),
        el('td', d.error ? '—' : bytes(d.free_bytes)), el('td', d.error ? '—' : bytes(d.total_bytes)),
        el('td', p === null ? '—' : `${p.toFixed(1)} %`, p !== null && p < 10 ? 'failed' : ''),
        el('td', d.error ? d.error : (p !== null && p < 10 ? 'nearly full' : 'ok'), d.error ? 'failed' : ''));
      const cell = el('td');
      cell.appendChild(fragmentsLink(d.device_id));
      tr.appendChild(cell);
      return tr;
    });
    for (const [id, owner] of conflicts) {
      const tr = document.createElement('tr');
      tr.append(el('td', id), el('td', ''), el('td', '—'), el('td', '—'), el('td', '—'),
        el('td', `conflict: belongs to ${owner}`, 'failed'), el('td', ''));
      devices.push(tr);
    }
    if (!devices.length) {
      const tr = document.createElement('tr');
      const td = el('td', 'no storage device', 'hint');
      td.colSpan = 7;
      tr.appendChild(td);
      devices.push(tr);
    }
    $('node-devices-body').replaceChildren(...devices);
    const services = report && report.services
      ? report.services
      : (node.services || []).map((s) => ({ name: s, status: 'unknown' }));
    $('node-services').replaceChildren(...(services.length
      ? services.map((s) => el('li', `${s.name}: ${s.status}`, `service ${s.status}`))
      : [el('li', 'no declared service')]));
    renderNodeLinks(node);
  }

  function renderNodeLinks(node) {
    const out = [];
    const report = node.last_report || null;
    if (links && links.grafana_url) {
      const a = el('a', 'Grafana dashboard', 'link-grafana');
      const ip = node.connection && node.connection.remote ? node.connection.remote.replace(/:\d+$/, '') : node.last_ip;
      const params = new URLSearchParams();
      if (ip && report && report.metrics_port) params.set('var-instance', `${String(ip).replace(/^\[|\]$/g, '')}:${report.metrics_port}`);
      a.href = `${links.grafana_url}/d/nodewarden/nodewarden?${params}`;
      a.rel = 'noopener noreferrer';
      a.target = '_blank';
      out.push(a);
    }
    if (links && links.prometheus_url) {
      const a = el('a', 'Prometheus', 'link-prometheus');
      const expr = `{node="${node.name.replace(/["\\]/g, '')}"}`;
      a.href = `${links.prometheus_url}/graph?${new URLSearchParams({ 'g0.expr': expr, 'g0.tab': '0', 'g0.range_input': '1h' })}`;
      a.rel = 'noopener noreferrer';
      a.target = '_blank';
      out.push(a);
    }
    if (!out.length) out.push(el('span', 'No Grafana or Prometheus configured ([grafana] url, [prometheus] url).', 'hint'));
    $('node-links').replaceChildren(...out);
  }

  async function refreshNode(gen) {
    const name = currentNode();
    if (name === null) return;
    const path = encodeURIComponent(name);
    try {
      if (!links) {
        const answer = await api('console');
        if (gen !== generation) return;
        links = answer.ok ? await answer.json() : {};
      }
      const [history, events] = await Promise.all([
        api(`nodes/${path}/history`),
        api(`events?${new URLSearchParams({ node: name, limit: '20' })}`),
      ]);
      if (gen !== generation || currentNode() !== name) return;
      if (!history.ok) throw new Error(await errorText(history));
      const h = await history.json();
      if (gen !== generation || currentNode() !== name) return;
      const points = Array.isArray(h.points) ? h.points : [];
      $('node-points').textContent = points.length
        ? `${points.length} report(s) since ${clock(points[0].at_ms)} (one every ${Math.round(h.interval_ms / 1000)} s at most, the last ${h.cap} kept)`
        : 'No report from this node since the controller started.';
      // With [prometheus] url the charts show Prometheus's last hour (it outlives this
      // controller's run); its reports are the fallback when Prometheus cannot answer.
      let fromPrometheus = false;
      if (links && links.prometheus_url) {
        const prom = await api(`nodes/${path}/prometheus`);
        if (gen !== generation || currentNode() !== name) return;
        if (prom.ok) {
          renderPrometheusCharts(await prom.json());
          fromPrometheus = true;
          $('node-points').textContent += ' Charts: the last hour from Prometheus.';
        } else {
          $('node-points').textContent += ` Charts from these reports (Prometheus: ${await errorText(prom)}).`;
        }
        if (gen !== generation || currentNode() !== name) return;
      }
      $('node-charts').dataset.source = fromPrometheus ? 'prometheus' : 'reports';
      if (!fromPrometheus) renderCharts(points);
      renderNodeFacts(name);
      if (events.ok) {
        const list = await events.json();
        if (gen !== generation || currentNode() !== name) return;
        $('node-events-body').replaceChildren(...list.map((e) => {
          const tr = document.createElement('tr');
          tr.className = `event ${e.kind}${e.result === 'failed' ? ' failed' : ''}`;
          tr.append(el('td', clock(e.at_ms), 'event-time'), el('td', e.kind === 'operation' ? e.action : e.kind),
            el('td', e.actor || ''), el('td', e.result || ''), el('td', e.detail || '', 'event-detail'));
          return tr;
        }));
      }
      $('node-status').textContent = '';
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof Unauthorized) { tokenRefused(); return; }
      $('node-status').textContent = `Node page not refreshed: ${err.message}`;
    }
  }

  // ---------- a device's fragments ----------

  // The device named by the page's address (`#fragments/ID`), or null.
  function currentDevice() {
    const m = /^#fragments\/([0-9]{1,10})$/.exec(location.hash);
    if (!m) return null;
    const id = Number(m[1]);
    return id <= 0xffffffff ? id : null;
  }

  function fragmentsLink(device) {
    const a = el('a', 'fragments', 'fragments-link');
    a.href = `#fragments/${encodeURIComponent(String(device))}`;
    a.title = `the fragment audit of device ${device}`;
    return a;
  }

  // "1 missing, 2 orphaned (21 B), …" for the states that are problems, '' for none.
  function fragmentProblems(audit) {
    const parts = [];
    const n = (s) => Number((audit[s] || {}).count) || 0;
    if (n('missing')) parts.push(`${n('missing')} missing`);
    if (n('corrupt')) parts.push(`${n('corrupt')} corrupt`);
    if (n('orphaned')) parts.push(`${n('orphaned')} orphaned (${bytes(audit.orphaned.bytes)})`);
    if (n('no_digest')) parts.push(`${n('no_digest')} without digest`);
    return parts.length ? `${parts.join(', ')} fragment(s)` : '';
  }

  const FRAGMENT_STATES = [
    ['present', 'present'], ['missing', 'missing'], ['orphaned', 'orphaned'],
    ['corrupt', 'corrupt'], ['no_digest', 'no digest'],
  ];

  function renderDeviceFragments(view) {
    const audit = view.audit || {};
    const facts = $('device-fragments-facts');
    facts.replaceChildren(document.createTextNode('on '), nodeLink(view.node),
      document.createTextNode(` · inventory received ${clock(view.inventory_ms)} · audited ${clock(view.audited_ms)} (${ago(view.audited_ms)})`));
    facts.dataset.audited = String(view.audited_ms);
    $('device-fragments-body').replaceChildren(...FRAGMENT_STATES.map(([key, label]) => {
      const s = audit[key] || { count: 0, bytes: 0, sample: [] };
      const sample = Array.isArray(s.sample) ? s.sample : [];
      const tr = document.createElement('tr');
      tr.dataset.state = key;
      const problem = key !== 'present' && Number(s.count) > 0;
      tr.className = problem ? 'fragment-state failed' : 'fragment-state';
      const more = Number(s.count) > sample.length ? ` … (${Number(s.count) - sample.length} more)` : '';
      tr.append(el('td', label, 'state-name'), el('td', String(s.count), 'state-count'),
        el('td', key === 'missing' ? '—' : bytes(s.bytes), 'state-bytes'),
        el('td', sample.length ? sample.join(' ') + more : '—', 'state-sample'));
      tr.lastChild.dataset.ids = sample.join(' ');
      tr.children[2].dataset.bytes = String(s.bytes);
      return tr;
    }));
    $('device-fragments-note').textContent = Number(audit.unrepresentable) > 0
      ? `${audit.unrepresentable} row(s) of FRAGMENT for this device hold ids no fragment file can have (negative or above 32 bits).`
      : '';
  }

  // A fresh audit of the device's latest inventory (one read of FRAGMENT for the device), on
  // opening the view and on "Audit again"; never on the 3 s refresh.
  async function refreshDeviceFragments(gen) {
    const device = currentDevice();
    if (device === null) return;
    const button = $('device-fragments-reaudit');
    button.disabled = true;
    $('device-fragments-status').textContent = 'Auditing against the DFS database…';
    try {
      const answer = await api(`fragments/audit?${new URLSearchParams({ device: String(device) })}`);
      if (gen !== generation || currentDevice() !== device) return;
      if (!answer.ok) {
        const text = await errorText(answer);
        if (gen !== generation || currentDevice() !== device) return;
        $('device-fragments-body').replaceChildren();
        $('device-fragments-facts').textContent = '';
        $('device-fragments-status').textContent = answer.status === 404
          ? `No fragment inventory of device ${device} yet: its agent needs a [fragments] section, and sends one after its first scan (${text}).`
          : answer.status === 503 ? `No audit: ${text} (the controller needs a [dfs] database).` : `No audit: ${text}`;
        return;
      }
      const view = await answer.json();
      if (gen !== generation || currentDevice() !== device) return;
      renderDeviceFragments(view);
      $('device-fragments-status').textContent = '';
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof Unauthorized) { tokenRefused(); return; }
      $('device-fragments-status').textContent = `No audit: ${err.message}`;
    } finally {
      button.disabled = false;
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
    $('fragments-pairs').addEventListener('input', checkPairs);
    for (const id of ['filter-text', 'filter-role', 'filter-state', 'group-role']) {
      $(id).addEventListener('input', arrangeFleet);
      $(id).addEventListener('change', arrangeFleet);
    }
    for (const th of document.querySelectorAll('#fleet-table th[data-sort]')) {
      th.tabIndex = 0;
      const sortBy = () => {
        if (view.sort === th.dataset.sort) view.dir = -view.dir;
        else { view.sort = th.dataset.sort; view.dir = 1; }
        arrangeFleet();
      };
      th.addEventListener('click', sortBy);
      th.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(); } });
    }
    $('select-shown').addEventListener('change', () => {
      const on = $('select-shown').checked;
      for (const row of rows.values()) if (shown(row)) setSelected(row.nodeName, on);
      arrangeFleet();
    });
    for (const b of document.querySelectorAll('.bulk-action')) {
      b.addEventListener('click', () => bulkAction(b.dataset.action));
    }
    window.addEventListener('hashchange', route);
    $('device-fragments-reaudit').addEventListener('click', () => refreshDeviceFragments(generation));
    $('bulk-clear').addEventListener('click', () => {
      for (const name of [...selected]) setSelected(name, false);
      arrangeFleet();
    });
    if (sessionStorage.getItem(TOKEN_KEY)) startSession(null);
    else showLogin();
  }

  start();
})();
