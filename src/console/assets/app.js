// Starling console: plain JavaScript, no library, no build step (src/console/mod.rs).
// Everything it shows comes from this node's API; every value is written as text.
'use strict';

(() => {
  const POLL_MS = 2000;
  // Keys change only on a rotation: their view is asked every 5th poll (10 s).
  const GOSSIP_EVERY = 5;
  // Runs are kept for the longest window; the timeline shows the chosen one (a failover
  // of a few seconds is a sliver in 10 minutes, and readable in one).
  const WINDOW_MS = 10 * 60 * 1000;
  const RUNS_LIMIT = 2000;
  const SLOTS_SHOWN = 3;
  const SLOTS_ASKED = 10;
  const TOKEN_KEY = 'starling.console.token';

  const NODE = document.body.dataset.node;
  const ACCESS = document.body.dataset.access; // token | read-only | open
  const HERE_TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  };
  const SVG = 'http://www.w3.org/2000/svg';
  const svg = (tag, attrs) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  };

  const state = {
    members: null, // MembersPage
    jobs: null, // JobsPage
    runs: null, // RunsPage: the last answer (which nodes answered)
    seen: new Map(), // node|job|slot|fire id -> run, every run seen in the window
    recent: [], // state.seen's runs, newest first
    runsLimit: RUNS_LIMIT, // how many runs the next poll asks for
    detail: null, // JobView of the open job
    selected: null, // name of the open job
    filter: '',
    skew: 0, // node clock minus browser clock, ms
    lastOk: 0,
    failing: null, // why the last poll failed
    gossip: null, // GossipView: this node's keys and packet counters
    polls: 0, // polls so far; the gossip view is asked every GOSSIP_EVERY polls
    schedules: new Map(), // schedule|tz|dst -> {words, next: [ms], at, error, pending}
    requests: [], // times of this page's requests, for the rate shown in the footer
    timer: null,
    notes: {}, // panel note id -> why its data could not be read
  };
  const showNote = (id, text) => {
    const why = state.notes[id] || '';
    const all = [why, text].filter(Boolean).join(' ');
    $(id).hidden = !all;
    setText($(id), all);
  };

  // ---- the token: this tab only (sessionStorage), sent only to this node ----

  const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
  const canWrite = () => ACCESS === 'open' || token() !== '';

  class ApiFailure extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const now = Date.now();
    state.requests.push(now);
    while (state.requests.length && state.requests[0] < now - 60000) state.requests.shift();
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
        redirect: 'error',
      });
    } catch (e) {
      throw new ApiFailure(0, 'unreachable', `cannot reach node ${NODE} (${e.message})`);
    }
    const date = res.headers.get('Date');
    if (date) noteServerTime(Date.parse(date));
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!res.ok) {
      const code = (data && data.code) || 'http_' + res.status;
      const message = (data && data.message) || text.slice(0, 300) || res.statusText;
      throw new ApiFailure(res.status, code, message);
    }
    return data;
  }

  // The Date header has whole seconds: only a skew above 2 s is taken as real.
  function noteServerTime(serverMs) {
    if (!Number.isFinite(serverMs)) return;
    const skew = serverMs + 500 - Date.now();
    state.skew = Math.abs(skew) > 2000 ? skew : 0;
  }
  const nodeNow = () => Date.now() + state.skew;

  // What a failed request means, in words a person can act on.
  function explain(err, action) {
    const what = action ? action + ': ' : '';
    if (err.status === 401) {
      return token()
        ? `${what}the node refused the token: it is not this node's API token. Enter the right one, or forget it.`
        : `${what}this node needs its API token for every request, reads included. Enter it above.`;
    }
    if (err.status === 403 && err.code === 'writes_disabled') {
      return `${what}refused: ${err.message} (HTTP 403, writes_disabled)`;
    }
    if (err.status === 0) return `${what}${err.message}`;
    return `${what}${err.message} (HTTP ${err.status}, ${err.code})`;
  }

  function say(text, kind) {
    const box = $('message');
    $('message-text').textContent = text;
    box.className = 'message ' + (kind || 'info');
    box.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    box.hidden = false;
  }
  $('message-close').addEventListener('click', () => {
    $('message').hidden = true;
  });

  // ---- formatting ----

  const fmtCache = new Map();
  function formatter(tz, withDate) {
    const key = tz + '|' + withDate;
    if (!fmtCache.has(key)) {
      const opts = { timeZone: tz, hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' };
      if (withDate) Object.assign(opts, { weekday: 'short', day: 'numeric', month: 'short' });
      try {
        fmtCache.set(key, new Intl.DateTimeFormat('en-GB', opts));
      } catch (_) {
        fmtCache.set(key, new Intl.DateTimeFormat('en-GB', { ...opts, timeZone: 'UTC' }));
      }
    }
    return fmtCache.get(key);
  }
  const dayFmt = new Map();
  const dayOf = (ms, tz) => {
    if (!dayFmt.has(tz)) {
      const opts = { year: 'numeric', month: '2-digit', day: '2-digit' };
      try {
        dayFmt.set(tz, new Intl.DateTimeFormat('en-CA', { ...opts, timeZone: tz }));
      } catch (_) {
        dayFmt.set(tz, new Intl.DateTimeFormat('en-CA', { ...opts, timeZone: 'UTC' }));
      }
    }
    return dayFmt.get(tz).format(ms);
  };
  function fmtTime(ms, tz) {
    const today = dayOf(nodeNow(), tz) === dayOf(ms, tz);
    return formatter(tz, !today).format(ms);
  }
  const fmtHere = (ms) => fmtTime(ms, HERE_TZ);
  const offsetOf = (ms, tz) => {
    // Minutes east of UTC, from the formatted wall time.
    const parts = {};
    for (const p of new Intl.DateTimeFormat('en-US', {
      timeZone: tz, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric',
      hour: 'numeric', minute: 'numeric',
    }).formatToParts(ms)) parts[p.type] = p.value;
    const wall = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute);
    return Math.round((wall - Math.floor(ms / 60000) * 60000) / 60000);
  };
  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
    return Math.floor(ms / 60000) + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
  }
  function ago(ms) {
    const s = Math.max(0, Math.round((nodeNow() - ms) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }
  const OUTCOME_WORDS = {
    ok: 'ok', failed: 'failed', timed_out: 'timed out', cancelled: 'cancelled',
    skipped_by_overlap: 'skipped (overlap)', skipped_by_misfire_policy: 'skipped (misfire policy)',
    missed: 'missed', abandoned: 'abandoned',
  };
  // Outcome to colour class (the legend's).
  const outcomeClass = (o) => ({
    ok: 'ok', failed: 'failed', timed_out: 'timed_out', cancelled: 'cancelled',
    skipped_by_overlap: 'skipped', skipped_by_misfire_policy: 'skipped', missed: 'missed', abandoned: 'missed',
  })[o] || 'missed';
  function outcomeText(run) {
    let t = OUTCOME_WORDS[run.outcome] || run.outcome;
    if (run.exit_code !== null && run.exit_code !== undefined) t += ` (exit ${run.exit_code})`;
    if (run.slots > 1) t += ` ×${run.slots}`;
    return t;
  }
  const badge = (text, cls) => el('span', { class: 'badge ' + cls, text });

  // Keeps a table body's rows in step with `items` by key, reusing rows so that focus and
  // open details survive a refresh.
  function syncRows(tbody, items, key, build, update) {
    const existing = new Map();
    for (const row of Array.from(tbody.rows)) existing.set(row.dataset.key, row);
    let previous = null;
    for (const item of items) {
      const k = key(item);
      let row = existing.get(k);
      if (row) existing.delete(k);
      else {
        row = build(item);
        row.dataset.key = k;
      }
      update(row, item);
      const want = previous ? previous.nextSibling : tbody.firstChild;
      if (want !== row) tbody.insertBefore(row, want);
      previous = row;
    }
    for (const row of existing.values()) row.remove();
  }
  const setText = (node, text) => {
    if (node.textContent !== text) node.textContent = text;
  };
  const setChildren = (node, ...children) => {
    node.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
  };

  // ---- members ----

  const STATES = ['alive', 'suspected', 'leaving', 'clock', 'dead'];

  // A member's gossip key as this node sees it (GET /v1/gossip): the key this node seals
  // with for itself, the key each peer's last packet here was sealed with for the others.
  // A keyed node only hears peers holding one of its keys, so `open` is the whole cluster.
  function keyStatus(m) {
    const g = state.gossip;
    if (!g) return null;
    if (!g.sealing_key) return { text: 'open', cls: 'state-leaving', title: 'Gossip is not sealed: no cluster key (README, Security).' };
    if (m.is_self) {
      const more = g.keys_held.length > 1 ? ` · opens ${g.keys_held.length} keys` : '';
      return { text: `sealed · ${g.sealing_key}${more}`, cls: 'state-alive', title: 'This node seals with key ' + g.sealing_key + ' and opens with ' + g.keys_held.join(', ') + '.' };
    }
    const peer = g.peers.find((p) => p.address === m.address);
    if (!peer) return { text: 'not heard directly', cls: 'state-unknown', title: 'No packet from it has reached this node yet; it is known through others.' };
    if (peer.key === g.sealing_key) return { text: `sealed · ${peer.key}`, cls: 'state-alive', title: 'Its last packet here was sealed with key ' + peer.key + ', this node\'s sealing key.' };
    return { text: `sealed · ${peer.key} (not this node's)`, cls: 'state-suspected', title: 'Its last packet here was sealed with key ' + peer.key + ', which this node opens but does not seal with: a key rotation in progress.' };
  }

  function gossipSummary() {
    const g = state.gossip;
    if (!g) return '';
    const p = g.packets;
    const dropped = p.dropped_plain + p.dropped_sealed + p.dropped_unknown_key + p.dropped_forged + p.dropped_stale + p.dropped_other;
    const why = [[p.dropped_plain, 'without a seal'], [p.dropped_sealed, 'sealed, at this open node'], [p.dropped_unknown_key, 'with a key not held here'],
      [p.dropped_forged, 'failing authentication'], [p.dropped_stale, 'outside the replay window'], [p.dropped_other, 'not gossip']]
      .filter(([n]) => n > 0).map(([n, w]) => `${n} ${w}`);
    const head = g.sealing_key
      ? `Gossip is sealed: this node seals with key ${g.sealing_key} and opens ${g.keys_held.length === 1 ? 'only with it' : 'with ' + g.keys_held.join(', ')}.`
      : 'Gossip is open: no cluster key is set, so any host that reaches the gossip port can join (README, Security).';
    return `${head} Packets dropped here: ${dropped}${why.length ? ' (' + why.join(', ') + ')' : ''} of ${p.received} received.`;
  }

  function renderMembers() {
    const page = state.members;
    const tbody = $('members').tBodies[0];
    const members = page ? page.members : [];
    const keyed = state.gossip !== null;
    $('key-col').hidden = !keyed;
    syncRows(tbody, members, (m) => m.id,
      () => el('tr', {}, el('th', { scope: 'row' }), el('td', { class: 'mono' }), el('td'),
        el('td', { class: 'mono' }), el('td', { class: 'num' }), el('td', { class: 'mono' }), el('td')),
      (row, m) => {
        const c = row.cells;
        setChildren(c[0], el('span', { text: m.id }), m.is_self ? el('span', { class: 'self', text: 'this node' }) : null);
        setText(c[1], m.address);
        const st = STATES.includes(m.state) ? m.state : 'unknown';
        if (c[2].textContent !== m.state) setChildren(c[2], badge(m.state, 'state-' + st));
        row.className = 'member-' + st;
        setText(c[3], String(m.generation));
        c[3].title = 'started ' + fmtTime(m.generation, HERE_TZ);
        setText(c[4], String(m.jobs_owned));
        setText(c[5], m.api || '—');
        c[6].hidden = !keyed;
        const k = keyStatus(m);
        if (k && c[6].textContent !== k.text) setChildren(c[6], badge(k.text, k.cls));
        if (k) c[6].title = k.title;
      });
    const alive = members.filter((m) => m.state === 'alive').length;
    setText($('members-count'), page ? `${alive} alive of ${members.length}` : '');
    showNote('members-note', '');
    const summary = gossipSummary();
    $('gossip-note').hidden = !summary;
    setText($('gossip-note'), summary);
  }

  // ---- jobs ----

  const scheduleKey = (d) => `${d.schedule || ''}|${d.timezone || 'UTC'}|${d.dst || ''}`;

  // Asks the node for a schedule's words and next slots when its cached slots run out
  // (rarely: SLOTS_ASKED slots last a while), so the page stays light on the node.
  function schedulePreview(def) {
    // A job with `after` has no slots of its own: it runs once per success of each parent.
    if (def.after) return { words: 'after ' + def.after.join(', '), next: [], after: true };
    const key = scheduleKey(def);
    let entry = state.schedules.get(key);
    const now = nodeNow();
    const future = entry ? entry.next.filter((t) => t > now) : [];
    const stale = !entry || (future.length < SLOTS_SHOWN && entry.next.length >= SLOTS_SHOWN);
    if (stale && !(entry && entry.pending) && !(entry && entry.error && now - entry.at < 30000)) {
      entry = entry || { words: '', next: [], at: 0 };
      entry.pending = true;
      state.schedules.set(key, entry);
      const q = new URLSearchParams({ schedule: def.schedule || '', count: String(SLOTS_ASKED) });
      if (def.timezone) q.set('timezone', def.timezone);
      if (def.dst) q.set('dst', def.dst);
      api('GET', '/v1/schedule?' + q)
        .then((p) => {
          Object.assign(entry, { words: p.words, next: p.next.map(Date.parse), error: null });
        })
        .catch((e) => {
          entry.error = explain(e);
        })
        .finally(() => {
          entry.pending = false;
          entry.at = nodeNow();
          renderJobs();
          if (state.detail) renderDetail();
        });
    }
    return entry || { words: '', next: [] };
  }

  function slotList(def, preview, count) {
    const tz = def.timezone || 'UTC';
    const now = nodeNow();
    const slots = preview.next.filter((t) => t > now).slice(0, count);
    if (!slots.length) return el('span', { class: 'muted', text: preview.after ? 'after each parent success' : preview.error ? 'unknown' : preview.next.length ? '…' : 'none' });
    const list = el('ol', { class: 'slots' });
    for (const t of slots) {
      const same = offsetOf(t, tz) === offsetOf(t, HERE_TZ);
      list.append(el('li', {},
        el('time', { datetime: new Date(t).toISOString(), text: fmtTime(t, tz) }),
        el('span', { class: 'zone', text: tz === HERE_TZ ? tz : same ? `${tz} = yours` : tz }),
        same ? null : el('span', { class: 'here', text: fmtHere(t) + ' yours' })));
    }
    return list;
  }

  // The newest run of each job in the gathered history.
  function lastRuns() {
    const last = new Map();
    for (const r of state.recent) {
      if (!last.has(r.job)) last.set(r.job, r);
    }
    return last;
  }

  function jobMatches(job, words) {
    const f = state.filter.trim().toLowerCase();
    if (!f) return true;
    const d = job.definition || {};
    return [job.name, d.schedule, d.timezone, d.command, job.owner, words, job.paused ? 'paused' : 'active']
      .some((s) => s && String(s).toLowerCase().includes(f));
  }

  function renderJobs() {
    const page = state.jobs;
    const tbody = $('jobs').tBodies[0];
    const all = page ? page.jobs : [];
    const last = lastRuns();
    const shown = all.filter((j) => jobMatches(j, schedulePreview(j.definition || {}).words));
    syncRows(tbody, shown, (j) => j.name,
      (j) => {
        const row = el('tr', { tabindex: '0', class: 'clickable' },
          el('th', { scope: 'row' }), el('td'), el('td'), el('td', { class: 'mono' }), el('td'), el('td'));
        row.addEventListener('click', () => openJob(row.dataset.key, row));
        row.addEventListener('keydown', (e) => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            openJob(row.dataset.key, row);
          }
        });
        return row;
      },
      (row, j) => {
        const d = j.definition || {};
        const preview = schedulePreview(d);
        const c = row.cells;
        row.setAttribute('aria-label', `Job ${j.name}: open its detail`);
        row.classList.toggle('selected', state.selected === j.name);
        row.setAttribute('aria-current', state.selected === j.name ? 'true' : 'false');
        setText(c[0], j.name);
        setChildren(c[1],
          el('span', { class: 'words', text: preview.words || (preview.error ? '' : '…') }),
          el('code', { text: d.schedule || '' }),
          d.timezone && d.timezone !== 'UTC' ? el('span', { class: 'zone', text: d.timezone }) : null);
        setChildren(c[2], j.paused ? el('span', { class: 'muted', text: 'none while paused' }) : slotList(d, preview, SLOTS_SHOWN));
        setText(c[3], j.owner || 'none');
        c[3].classList.toggle('muted', !j.owner);
        const r = last.get(j.name);
        setChildren(c[4], r
          ? el('span', {}, badge(outcomeText(r), 'outcome-' + outcomeClass(r.outcome)),
            el('span', { class: 'sub', text: ` ${fmtHere(r.slot_ms)} on ${r.node}` }))
          : el('span', { class: 'muted', text: 'no run yet' }));
        setChildren(c[5], j.paused ? badge('paused', 'paused') : badge('active', 'active'));
      });
    setText($('jobs-count'), page ? (shown.length === all.length ? String(all.length) : `${shown.length} of ${all.length}`) : '');
    showNote('jobs-note', !page || shown.length ? '' : all.length ? 'No job matches the filter.'
      : 'No jobs yet.' + (canWrite() ? ' Create one with “New job”.' : ''));
  }

  // ---- job detail ----

  function openJob(name, from) {
    state.selected = name;
    state.openedFrom = from || null;
    state.detail = (state.jobs && state.jobs.jobs.find((j) => j.name === name)) || null;
    $('detail').hidden = false;
    renderDetail();
    renderJobs();
    renderTimeline();
    $('detail').scrollIntoView({ block: 'nearest' });
    $('detail-title').focus();
    refreshDetail();
  }

  function closeJob() {
    const name = state.selected;
    state.selected = null;
    state.detail = null;
    $('detail').hidden = true;
    renderJobs();
    renderTimeline();
    const row = Array.from($('jobs').tBodies[0].rows).find((r) => r.dataset.key === name);
    if (row) row.focus();
  }
  $('detail-close').addEventListener('click', closeJob);
  $('detail').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') closeJob();
  });

  async function refreshDetail() {
    const name = state.selected;
    if (!name) return;
    try {
      const view = await api('GET', '/v1/jobs/' + encodeURIComponent(name));
      if (state.selected !== name) return;
      state.detail = view;
      $('detail-note').hidden = true;
    } catch (e) {
      if (state.selected !== name) return;
      $('detail-note').hidden = false;
      $('detail-note').textContent = e.status === 404 ? `Job ${name} is not in the catalog any more.` : explain(e);
    }
    renderDetail();
  }

  function toml(def) {
    const lines = [];
    for (const [k, v] of Object.entries(def || {})) {
      lines.push(`${k} = ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`);
    }
    return lines.join('\n');
  }

  function sourceText(source) {
    if (source === null || source === undefined) return '—';
    if (typeof source === 'string') return source;
    return JSON.stringify(source);
  }

  function renderDetail() {
    const j = state.detail;
    const name = state.selected;
    if (!name) return;
    setText($('detail-name'), name);
    const write = canWrite();
    $('act-pause').hidden = !write || !j || j.paused;
    $('act-resume').hidden = !write || !j || !j.paused;
    $('act-run').hidden = !write || !j;
    $('act-delete').hidden = !write || !j;
    if (!j) return;
    const d = j.definition || {};
    const preview = schedulePreview(d);
    const facts = [
      ['Schedule', el('span', {}, el('span', { class: 'words', text: preview.words }), el('code', { text: d.schedule || '' }))],
      ['Timezone', d.timezone || 'UTC'],
      ['Next slots', j.paused ? 'none while paused' : slotList(d, preview, 5)],
      ['Owner', j.owner || 'none'],
      ['State', j.paused ? badge('paused', 'paused') : badge('active', 'active')],
      ['Version', j.version || '—'],
      ['Source', sourceText(j.source)],
    ];
    if (j.conflicts && j.conflicts.length) facts.push(['Conflicts', JSON.stringify(j.conflicts)]);
    setChildren($('detail-facts'), ...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', {}, v)]));
    setText($('detail-definition'), toml(d));
    const runs = j.last_runs || state.recent.filter((r) => r.job === name).slice(0, 20);
    syncRows($('detail-runs').tBodies[0], runs, (r) => `${r.node}|${r.slot_ms}|${r.fire_id}`,
      () => el('tr', {}, el('td', { class: 'mono' }), el('td', { class: 'mono' }), el('td'),
        el('td', { class: 'num' }), el('td', { class: 'num' }), el('td')),
      (row, r) => {
        const c = row.cells;
        setText(c[0], fmtHere(r.slot_ms));
        setText(c[1], r.node);
        if (c[2].textContent !== outcomeText(r)) setChildren(c[2], badge(outcomeText(r), 'outcome-' + outcomeClass(r.outcome)));
        setText(c[3], String(r.attempts));
        setText(c[4], fmtDuration(r.duration_ms));
        const out = [r.stdout, r.stderr ? '[stderr]\n' + r.stderr : '', r.message ? '[' + r.message + ']' : '']
          .filter(Boolean).join('\n').trimEnd();
        if (c[5].dataset.out !== out) {
          c[5].dataset.out = out;
          setChildren(c[5], out ? el('pre', { class: 'out', text: out }) : el('span', { class: 'muted', text: 'no output' }));
        }
      });
  }

  // ---- actions ----

  async function act(label, method, path, body, done) {
    try {
      const result = await api(method, path, body);
      say(done(result), 'ok');
      await poll(true);
      return result;
    } catch (e) {
      say(explain(e, label), 'error');
      return null;
    }
  }
  const jobPath = (name, verb) => '/v1/jobs/' + encodeURIComponent(name) + (verb ? '/' + verb : '');
  $('act-pause').addEventListener('click', () => {
    const n = state.selected;
    act(`Pausing ${n}`, 'POST', jobPath(n, 'pause'), undefined, () => `Paused ${n}: it fires nothing until resumed.`)
      .then(() => refreshDetail());
  });
  $('act-resume').addEventListener('click', () => {
    const n = state.selected;
    act(`Resuming ${n}`, 'POST', jobPath(n, 'resume'), undefined, () => `Resumed ${n}: it runs its slots from now on.`)
      .then(() => refreshDetail());
  });
  $('act-run').addEventListener('click', () => {
    const n = state.selected;
    act(`Running ${n}`, 'POST', jobPath(n, 'run'), undefined,
      (r) => `Asked ${n} to run now on its owner (fire id ${r && r.fire_id}).`);
  });
  $('act-delete').addEventListener('click', () => {
    const n = state.selected;
    $('confirm-title').textContent = `Delete job ${n}?`;
    $('confirm-text').textContent = `${n} stops firing on every node. Its past runs stay in the history. This cannot be undone from here.`;
    $('confirm-yes').textContent = `Delete ${n}`;
    $('confirm-dialog').showModal();
    $('confirm-no').focus();
  });
  $('confirm-no').addEventListener('click', () => $('confirm-dialog').close());
  $('confirm-dialog').addEventListener('close', () => {
    if (!$('detail').hidden && !$('act-delete').hidden) $('act-delete').focus();
  });
  $('confirm-yes').addEventListener('click', async () => {
    const n = state.selected;
    $('confirm-dialog').close();
    const r = await act(`Deleting ${n}`, 'DELETE', jobPath(n), undefined, () => `Deleted ${n}.`);
    if (r !== null) closeJob();
  });

  // ---- the create form ----

  const zones = (Intl.supportedValuesOf && Intl.supportedValuesOf('timeZone')) || [];
  $('zones').replaceChildren(...['UTC', ...zones].map((z) => el('option', { value: z })));

  $('new-job').addEventListener('click', () => {
    $('create-form').reset();
    $('create-error').textContent = '';
    $('f-preview').textContent = '';
    $('create-dialog').showModal();
    $('f-name').focus();
  });
  $('create-cancel').addEventListener('click', () => $('create-dialog').close());
  // Focus goes back where the dialog was opened from (keyboard users keep their place).
  $('create-dialog').addEventListener('close', () => {
    if (!$('new-job').hidden) $('new-job').focus();
  });

  let previewTimer = null;
  const previewSchedule = () => {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(async () => {
      const schedule = $('f-schedule').value.trim();
      const tz = $('f-timezone').value.trim();
      if (!schedule) {
        $('f-preview').textContent = '';
        return;
      }
      const q = new URLSearchParams({ schedule, count: '3' });
      if (tz) q.set('timezone', tz);
      try {
        const p = await api('GET', '/v1/schedule?' + q);
        const slots = p.next.map((t) => fmtTime(Date.parse(t), p.timezone)).join(', ');
        $('f-preview').className = 'preview';
        $('f-preview').textContent = `${p.words}. Next: ${slots || 'none'} (${p.timezone})`;
      } catch (e) {
        $('f-preview').className = 'preview bad';
        $('f-preview').textContent = explain(e);
      }
    }, 300);
  };
  $('f-schedule').addEventListener('input', previewSchedule);
  $('f-timezone').addEventListener('input', previewSchedule);

  $('create-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.target.elements;
    const name = f.name.value.trim();
    const def = { name };
    for (const k of ['schedule', 'timezone', 'command', 'timeout', 'overlap', 'misfire']) {
      const v = f[k].value.trim();
      if (v) def[k] = v;
    }
    const retries = f.retries.value.trim();
    if (retries) {
      if (!/^\d+$/.test(retries)) {
        $('create-error').textContent = '`retries`: a whole number of extra attempts, like 2.';
        f.retries.focus();
        return;
      }
      def.retries = Number(retries);
    }
    for (const [k, label] of [['name', 'a name'], ['schedule', 'a schedule'], ['command', 'a command']]) {
      if (!def[k]) {
        $('create-error').textContent = `The job needs ${label}.`;
        f[k].focus();
        return;
      }
    }
    $('create-save').disabled = true;
    try {
      await api('PUT', jobPath(name), def);
      $('create-dialog').close();
      say(`Created ${name}: it runs on its owner from its next slot.`, 'ok');
      await poll(true);
      const row = Array.from($('jobs').tBodies[0].rows).find((r) => r.dataset.key === name);
      openJob(name, row);
    } catch (err) {
      $('create-error').textContent = explain(err, `Creating ${name}`);
    } finally {
      $('create-save').disabled = false;
    }
  });

  // ---- the timeline ----

  function renderTimeline() {
    const box = $('timeline');
    const width = Math.max(320, box.clientWidth || 900);
    const runs = state.recent;
    const now = nodeNow();
    const span = Number($('tl-window').value) || WINDOW_MS;
    const from = now - span;
    const memberState = new Map(((state.members && state.members.members) || []).map((m) => [m.id, m.state]));
    const lanes = new Set(memberState.keys());
    for (const r of runs) if (r.last_slot_ms >= from) lanes.add(r.node);
    const ids = Array.from(lanes).sort();
    const labelW = 150;
    const laneH = 34;
    const top = 6;
    const axisH = 22;
    const height = top + Math.max(1, ids.length) * laneH + axisH;
    const x = (t) => labelW + ((t - from) / span) * (width - labelW - 12);
    const root = svg('svg', { width: String(width), height: String(height), viewBox: `0 0 ${width} ${height}`, 'aria-hidden': 'true', focusable: 'false' });
    // A grid line a minute (10 s in the one-minute window), labelled.
    const step = span > 60000 ? 60000 : 10000;
    for (let t = Math.ceil(from / step) * step; t <= now; t += step) {
      const gx = x(t);
      root.append(svg('line', { x1: gx, x2: gx, y1: top, y2: height - axisH, class: 'grid' }));
      const label = svg('text', { x: gx, y: height - 6, class: 'axis', 'text-anchor': 'middle' });
      label.textContent = formatter(HERE_TZ, false).format(t).slice(0, step < 60000 ? 8 : 5);
      root.append(label);
    }
    const summary = [];
    ids.forEach((id, i) => {
      const y = top + i * laneH;
      // Not a member any more (its state expired), or members could not be read.
      const st = memberState.get(id) || (state.members ? 'gone' : 'unknown');
      root.append(svg('rect', { x: labelW, y: y + 2, width: width - labelW - 12, height: laneH - 4, class: 'lane lane-' + st, rx: 3 }));
      const name = svg('text', { x: 8, y: y + laneH / 2 + 1, class: 'lane-name', 'dominant-baseline': 'middle' });
      name.textContent = id.length > 14 ? id.slice(0, 13) + '…' : id;
      root.append(name);
      const tag = svg('text', { x: labelW - 8, y: y + laneH / 2 + 1, class: 'lane-state state-' + st, 'text-anchor': 'end', 'dominant-baseline': 'middle' });
      tag.textContent = st;
      root.append(tag);
      let count = 0;
      let lastMs = null;
      for (const r of runs) {
        if (r.node !== id || r.last_slot_ms < from) continue;
        count += r.slots || 1;
        if (lastMs === null) lastMs = r.last_slot_ms;
        const x1 = x(Math.max(r.slot_ms, from));
        const x2 = x(r.last_slot_ms);
        const cls = 'mark ' + outcomeClass(r.outcome) + (state.selected && r.job !== state.selected ? ' dim' : '');
        const mark = svg('rect', {
          x: (x1 - 1.5).toFixed(1), y: y + 7, width: Math.max(3, x2 - x1 + 3).toFixed(1), height: laneH - 14, class: cls, rx: 1,
          'data-node': r.node, 'data-job': r.job, 'data-slot': r.slot_ms, 'data-outcome': r.outcome,
        });
        const title = svg('title');
        title.textContent = `${r.job} · ${fmtHere(r.slot_ms)} · ${outcomeText(r)} on ${r.node}`;
        mark.append(title);
        root.append(mark);
      }
      summary.push(`${id} (${st}): ${count} run${count === 1 ? '' : 's'}${lastMs ? ', last ' + fmtHere(lastMs) : ''}`);
    });
    box.replaceChildren(root);
    const last = span > 60000 ? 'the last 10 minutes' : 'the last minute';
    box.setAttribute('aria-label', summary.length ? `Runs in ${last}, per node. ` + summary.join('; ') + '.' : `No runs in ${last}.`);
    const missing = ((state.runs && state.runs.nodes) || []).filter((n) => !n.answered);
    showNote('timeline-note', missing.map((n) => `New runs of ${n.node} are missing: ${n.error}.`).join(' '));
  }
  window.addEventListener('resize', () => renderTimeline());
  $('tl-window').addEventListener('change', () => renderTimeline());

  // The page keeps every run it has seen in the window: a node that died takes its history
  // with it, and its lane should show where it stopped, not go blank.
  const runKey = (r) => `${r.node}|${r.job}|${r.slot_ms}|${r.fire_id}`;
  function absorbRuns(list) {
    let fresh = 0;
    for (const r of list) {
      const k = runKey(r);
      if (!state.seen.has(k)) fresh++;
      state.seen.set(k, r);
    }
    const from = nodeNow() - WINDOW_MS - 60000;
    for (const [k, r] of state.seen) if (r.last_slot_ms < from) state.seen.delete(k);
    state.recent = Array.from(state.seen.values()).sort((a, b) =>
      b.last_slot_ms - a.last_slot_ms || (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
    // Ask next time for about what arrives between two polls, with room to spare; all new
    // means some may have been cut off, so ask for the full window again.
    state.runsLimit = list.length >= state.runsLimit && fresh === list.length
      ? RUNS_LIMIT
      : Math.min(RUNS_LIMIT, Math.max(100, fresh * 3 + 50));
  }

  // ---- polling ----

  function renderAccess() {
    const write = canWrite();
    for (const b of document.querySelectorAll('[data-write]')) {
      if (b.closest('#detail')) continue; // renderDetail decides those
      b.hidden = !write;
    }
    $('token-forget').hidden = token() === '';
    $('token-use').textContent = token() ? 'Change token' : 'Use token';
    const words = {
      token: 'This node asks for its API token on every request. ',
      'read-only': 'This node has no API token: anyone can read, nobody can change anything through it. ',
      open: 'This node accepts changes from anyone who can reach it (--api-insecure-writes). ',
    }[ACCESS] || '';
    $('access').textContent = words + (token()
      ? 'A token is set for this tab only; changes are offered.'
      : ACCESS === 'open' ? '' : 'No token entered: read only.');
  }

  function renderLive() {
    const live = $('live');
    if (state.failing) {
      live.className = 'live stale';
      live.textContent = state.lastOk ? `stale since ${fmtHere(state.lastOk)}: ${state.failing}` : state.failing;
      live.title = Object.values(state.notes).filter(Boolean).join(' ');
    } else {
      live.className = 'live ok';
      live.textContent = `live · updated ${fmtHere(state.lastOk)}`;
      live.title = '';
    }
    const n = state.requests.length;
    const secs = Math.min(60, (Date.now() - state.started) / 1000);
    $('rate').textContent = secs > 5 ? `this page: ${n} requests in the last ${Math.round(secs)} s` : '';
  }

  async function poll(once) {
    if (!once) clearTimeout(state.timer);
    if (document.hidden && !once) {
      state.timer = setTimeout(poll, POLL_MS);
      return;
    }
    const askGossip = state.polls++ % GOSSIP_EVERY === 0 || state.gossip === null;
    const [members, jobs, runs, gossip] = await Promise.allSettled([
      api('GET', '/v1/members'),
      api('GET', '/v1/jobs'),
      api('GET', '/v1/runs?limit=' + state.runsLimit),
      askGossip ? api('GET', '/v1/gossip') : Promise.resolve(state.gossip),
    ]);
    if (gossip.status === 'fulfilled') state.gossip = gossip.value;
    const failures = [members, jobs, runs].filter((r) => r.status === 'rejected').map((r) => r.reason);
    if (members.status === 'fulfilled') state.members = members.value;
    if (jobs.status === 'fulfilled') state.jobs = jobs.value;
    if (runs.status === 'fulfilled') {
      state.runs = runs.value;
      absorbRuns(runs.value.runs);
    }
    // Each panel says what it could not read.
    for (const [result, note] of [[members, 'members-note'], [jobs, 'jobs-note'], [runs, 'timeline-note']]) {
      state.notes[note] = result.status === 'rejected' ? explain(result.reason) : '';
    }
    if (failures.length) {
      const unauthorized = failures.find((f) => f.status === 401);
      state.failing = unauthorized
        ? 'the node wants its API token'
        : failures.length === 3 ? explain(failures[0]) : `${failures.length} of 3 reads failed`;
      if (unauthorized) say(explain(unauthorized), 'error');
    } else {
      state.failing = null;
      state.lastOk = nodeNow();
    }
    renderMembers();
    renderJobs();
    renderTimeline();
    renderLive();
    if (state.selected && !once) await refreshDetail();
    if (!once) state.timer = setTimeout(poll, POLL_MS);
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) poll();
  });

  $('filter').addEventListener('input', (e) => {
    state.filter = e.target.value;
    renderJobs();
  });

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token-input').value.trim();
    $('token-input').value = '';
    if (!t) {
      say('Paste the API token first.', 'error');
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, t);
    $('message').hidden = true;
    renderAccess();
    renderDetail();
    poll();
  });
  $('token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    renderAccess();
    renderDetail();
    say('Token forgotten: read only.', 'info');
    $('token-input').focus();
    poll();
  });

  state.started = Date.now();
  renderAccess();
  poll();
})();
