// Postern audit UI: the session list and the player. Plain JavaScript, no
// dependencies. Everything that comes from a recording is put on the page
// with textContent (or as an attribute value), never as HTML.
'use strict';

(() => {
  const PAGE_EVENTS = 1000;  // events fetched a page at a time
  const PREFETCH = 20000;    // events loaded ahead without being asked
  const MAX_CARDS = 300;     // transcript cards on the page at once
  const MAX_MARKS = 1000;    // timeline marks at most (one per slot)
  const MAX_GAP_MS = 5000;   // longest wait between two events while playing
  const VERIFY_PARALLEL = 3; // /verify requests at once

  const $ = (sel) => document.querySelector(sel);

  // el makes an element. props: className, text, title, dataset, and any
  // other property set as is; children are nodes or strings (as text).
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null) continue;
        if (k === 'text') e.textContent = String(v);
        else if (k === 'dataset') Object.assign(e.dataset, v);
        else e[k] = v;
      }
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  async function api(path) {
    const r = await fetch(path, { headers: { Accept: 'application/json' } });
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) throw new Error(body && body.error ? body.error : `HTTP ${r.status}`);
    return body;
  }

  const enc = encodeURIComponent;

  // ---- formatting ----

  function fmtTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return d.toISOString().replace('T', ' ').replace('Z', '');
  }

  function fmtBytes(n) {
    n = Number(n) || 0;
    if (n < 1024) return `${n} B`;
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    let u = -1;
    do { n /= 1024; u++; } while (n >= 1024 && u < units.length - 1);
    return `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[u]}`;
  }

  function fmtDuration(ms) {
    ms = Number(ms) || 0;
    if (ms < 1000) return `${Math.round(ms * 10) / 10} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function fmtClock(ms) {
    ms = Math.max(0, Number(ms) || 0);
    const total = Math.floor(ms / 1000);
    const h = Math.floor(total / 3600), m = Math.floor(total / 60) % 60, s = total % 60;
    const frac = String(Math.floor(ms % 1000)).padStart(3, '0');
    const mm = String(m).padStart(2, '0'), ss = String(s).padStart(2, '0');
    return h > 0 ? `${h}:${mm}:${ss}.${frac}` : `${mm}:${ss}.${frac}`;
  }

  const grpcCodes = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND',
    'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED',
    'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

  function pill(text, cls) { return el('span', { className: `pill ${cls || ''}`, text }); }

  function outcomePill(outcome) {
    return outcome ? pill(outcome, `o-${outcome}`) : pill('open', 'o-open');
  }

  // ---- verification badges ----

  const verified = new Map(); // session id → Promise of its /verify answer
  let verifyQueue = [];
  let verifying = 0;

  function verify(id) {
    if (!verified.has(id)) {
      verified.set(id, new Promise((resolve) => {
        verifyQueue.push({ id, resolve });
        pumpVerify();
      }));
    }
    return verified.get(id);
  }

  function pumpVerify() {
    while (verifying < VERIFY_PARALLEL && verifyQueue.length > 0) {
      const { id, resolve } = verifyQueue.shift();
      verifying++;
      api(`/api/sessions/${enc(id)}/verify`)
        .then(resolve, (e) => { verified.delete(id); resolve({ status: 'error', error: e.message }); })
        .finally(() => { verifying--; pumpVerify(); });
    }
  }

  // dropQueuedVerifies forgets the requests not yet sent (rows that left
  // the page).
  function dropQueuedVerifies() {
    for (const q of verifyQueue) verified.delete(q.id);
    verifyQueue = [];
  }

  function setBadge(b, v) {
    b.classList.remove('pending', 'ok', 'open', 'fail');
    let text, cls, title;
    switch (v.status) {
      case 'ok':
        cls = 'ok';
        if (v.kind === 'v1') {
          text = '✓ chain ok (v1)';
          title = `version 1 recording: ${v.records} records, hash chain intact; v1 recordings are not signed`;
        } else {
          text = '✓ sealed';
          title = `${v.records} records, hash chain intact, seal signed by audit key ${v.key}`;
        }
        break;
      case 'open':
        cls = 'open';
        text = '● open';
        title = `still being recorded: ${v.records} records verified so far, not yet sealed`;
        break;
      case 'fail':
        cls = 'fail';
        text = v.missing ? '✗ missing' : v.unsealed ? '✗ unsealed' : '✗ tampered';
        title = v.error || 'verification failed';
        break;
      default:
        cls = 'pending';
        text = '? not checked';
        title = v.error || 'could not verify';
    }
    b.textContent = text;
    b.classList.add(cls);
    b.title = title;
    b.dataset.status = v.status;
  }

  const badgeObserver = new IntersectionObserver((entries) => {
    for (const en of entries) {
      if (!en.isIntersecting) continue;
      const b = en.target;
      badgeObserver.unobserve(b);
      verify(b.dataset.id).then((v) => { if (b.isConnected) setBadge(b, v); });
    }
  }, { rootMargin: '200px' });

  // ---- the session list ----

  const filterNames = ['identity', 'service', 'protocol', 'outcome', 'since', 'until'];
  let listGen = 0;
  let listParams = new URLSearchParams();

  function formParams() {
    const p = new URLSearchParams();
    for (const n of filterNames) {
      const v = $(`#f-${n}`).value.trim();
      if (v) p.set(n, v);
    }
    const limit = $('#f-limit').value;
    if (limit !== '100') p.set('limit', limit);
    return p;
  }

  function fillForm(p) {
    for (const n of filterNames) $(`#f-${n}`).value = p.get(n) || '';
    $('#f-limit').value = p.get('limit') || '100';
  }

  function listHash(p) {
    const s = p.toString();
    return s ? `#/?${s}` : '#/';
  }

  function goList(p) {
    const h = listHash(p);
    if (location.hash === h) route(); else location.hash = h;
  }

  async function showList(p) {
    stopPlayer();
    $('#player-view').hidden = true;
    $('#list-view').hidden = false;
    document.title = 'Postern audit';
    fillForm(p);
    listParams = p;
    const gen = ++listGen;
    const status = $('#list-status');
    status.textContent = 'Loading…';
    status.className = '';
    const q = new URLSearchParams(p);
    try {
      const res = await api(`/api/sessions?${q}`);
      if (gen !== listGen) return;
      renderRows(res);
    } catch (e) {
      if (gen !== listGen) return;
      status.textContent = `Could not list sessions: ${e.message}`;
      status.className = 'error';
    }
  }

  function renderRows(res) {
    dropQueuedVerifies();
    badgeObserver.disconnect();
    const body = $('#sessions tbody');
    const frag = document.createDocumentFragment();
    for (const s of res.sessions) {
      const badge = el('span', { className: 'badge pending', text: '…', dataset: { id: s.id } });
      const tr = el('tr', { className: `row row-${s.outcome || 'open'}`, tabIndex: 0, dataset: { id: s.id } },
        el('td', null, el('code', { text: s.id })),
        el('td', { className: 'nowrap', text: fmtTime(s.start) }),
        el('td', {
          className: 'identity',
          text: (s.identity || '—') + (s.identities ? ` (+${s.identities.length})` : ''),
          title: [s.source ? `from ${s.source}` : '', ...(s.identities || [])].filter(Boolean).join('\n') || undefined,
        }),
        el('td', { text: s.service || '—' }),
        el('td', { text: s.protocol || '—' }),
        el('td', null, outcomePill(s.outcome)),
        el('td', { className: 'num nowrap', text: `${fmtBytes(s.bytes_in)} / ${fmtBytes(s.bytes_out)}` }),
        el('td', { className: 'num', text: s.events }),
        el('td', null, badge));
      frag.append(tr);
    }
    body.replaceChildren(frag);
    for (const b of body.querySelectorAll('.badge')) {
      const cached = verified.get(b.dataset.id);
      if (cached) cached.then((v) => { if (b.isConnected) setBadge(b, v); });
      else badgeObserver.observe(b);
    }
    const n = res.sessions.length;
    const status = $('#list-status');
    status.className = '';
    if (n === 0) {
      status.textContent = res.offset > 0 ? 'No more sessions.' : 'No sessions match.';
    } else {
      status.textContent = `Sessions ${res.offset + 1}–${res.offset + n}${res.more ? ', more older ones' : ''}.`;
    }
    $('#page-info').textContent = n ? `${res.offset + 1}–${res.offset + n}` : '';
    $('#prev').disabled = res.offset === 0;
    $('#next').disabled = !res.more;
    $('#prev').onclick = () => page(Math.max(0, res.offset - res.limit));
    $('#next').onclick = () => page(res.offset + res.limit);
  }

  function page(offset) {
    const p = new URLSearchParams(listParams);
    if (offset > 0) p.set('offset', String(offset)); else p.delete('offset');
    goList(p);
  }

  function openRow(tr) {
    if (tr && tr.dataset.id) location.hash = `#/session/${enc(tr.dataset.id)}`;
  }

  // ---- the player ----

  let P = null; // the open session

  function stopPlayer() {
    if (!P) return;
    P.playing = false;
    clearTimeout(P.timer);
    P.gen = -1;
    P = null;
  }

  let playerGen = 0;

  async function openSession(id) {
    stopPlayer();
    $('#list-view').hidden = true;
    $('#player-view').hidden = false;
    document.title = `${id} — Postern audit`;
    P = {
      id, gen: ++playerGen, events: [], next: 0, loading: null, broken: null,
      cur: -1, playing: false, timer: null, duration: 0, detail: null, firstCard: 0,
    };
    const me = P;
    $('#p-title').textContent = id;
    $('#p-header').replaceChildren(el('dd', { text: 'Loading…' }));
    $('#p-warning').hidden = true;
    $('#transcript').replaceChildren();
    $('#timeline-marks').replaceChildren();
    setPlaying(false);
    const badge = $('#p-badge');
    badge.className = 'badge pending';
    badge.textContent = '…';
    badge.title = '';
    verify(id).then((v) => { if (P === me) setBadge(badge, v); });
    let detail;
    try {
      [detail] = await Promise.all([api(`/api/sessions/${enc(id)}`), loadMore(me)]);
    } catch (e) {
      if (P !== me) return;
      $('#p-header').replaceChildren(el('dd', { className: 'error', text: `Could not open session: ${e.message}` }));
      return;
    }
    if (P !== me) return;
    me.detail = detail;
    renderHeader(detail);
    renderTimeline();
    if (me.events.length > 0) goTo(0);
    prefetch(me);
  }

  // loadMore fetches the next page of events of p, once at a time.
  function loadMore(p) {
    if (p.next === null) return Promise.resolve();
    if (p.loading) return p.loading;
    p.loading = api(`/api/sessions/${enc(p.id)}/events?from=${p.next}&limit=${PAGE_EVENTS}`).then((res) => {
      if (P !== p) return;
      for (const e of res.events) p.events.push(e);
      p.next = res.next;
      if (res.broken && !p.broken) {
        p.broken = res.broken;
        showWarning(`This recording fails verification at record ${res.broken.seq}: ${res.broken.reason}. ` +
          'Events from that record on cannot be trusted.');
        for (const c of $('#transcript').querySelectorAll('.event')) {
          if (Number(c.dataset.seq) >= p.broken.seq) c.classList.add('untrusted');
        }
      }
      p.loading = null;
      renderTimeline();
      updatePosition();
    }, (e) => {
      p.loading = null;
      if (P === p) showWarning(`Could not load events: ${e.message}`);
      throw e;
    });
    return p.loading;
  }

  async function prefetch(p) {
    try {
      while (P === p && p.next !== null && p.events.length < PREFETCH) await loadMore(p);
    } catch (_) { /* shown */ }
  }

  function showWarning(text) {
    const w = $('#p-warning');
    w.textContent = text;
    w.hidden = false;
  }

  function renderHeader(d) {
    const s = d.session;
    const sum = d.summary;
    const start = sum && sum.start;
    const end = sum && sum.end;
    const rows = [
      ['Identity', s.identity || '—'],
      ['Also', s.identities ? s.identities.join(', ') : null],
      ['Groups', start && start.groups ? start.groups.join(', ') : null],
      ['Source', s.source],
      ['Service', s.service],
      ['Protocol', s.protocol],
      ['Agent', s.agent],
      ['Transport', s.transport],
      ['Database', s.database],
      ['DB user', s.db_user],
      ['Start', fmtTime(s.start)],
      ['End', s.end ? fmtTime(s.end) : 'still open'],
      ['Duration', s.duration_ms !== undefined ? fmtDuration(s.duration_ms) : null],
      ['Outcome', outcomePill(s.outcome)],
      ['Bytes in / out', `${fmtBytes(s.bytes_in)} / ${fmtBytes(s.bytes_out)}`],
      ['Events', String(s.events)],
      ['Denies', s.denies ? String(s.denies) : null],
      ['Recording', d.recording ? `${d.recording.kind}, ${fmtBytes(d.recording.size)}` : 'missing'],
      ['Error', end && end.error ? end.error : null],
    ];
    const frag = document.createDocumentFragment();
    for (const [k, v] of rows) {
      if (v === null || v === undefined || v === '') continue;
      frag.append(el('div', { className: k === 'Identity' || k === 'Also' || k === 'Error' ? 'kv wide' : 'kv' }, el('dt', { text: k }), el('dd', null, v)));
    }
    $('#p-header').replaceChildren(frag);
    if (d.summary_error && !P.broken) showWarning(d.summary_error);
    const last = P.events.length ? P.events[P.events.length - 1].offset_ms : 0;
    P.duration = Math.max(s.duration_ms || 0, last);
  }

  // pos returns where event i sits on the timeline, from 0 to 1.
  function pos(i) {
    const n = P.events.length;
    const last = n ? P.events[n - 1].offset_ms : 0;
    const dur = Math.max(P.duration, last);
    if (dur <= 0) return n > 1 ? i / (n - 1) : 0;
    return Math.min(1, P.events[i].offset_ms / dur);
  }

  const markRank = { 'authz.deny': 4, 'postgres.query': 3, 'http.request': 3, 'grpc.call': 3, 'session.start': 2, 'session.end': 2, 'tcp.data': 0 };

  function typeClass(type) {
    if (type === 'session.start' || type === 'session.end' || type === 'recording.seal') return 't-session';
    return `t-${String(type).replace(/[^a-z0-9]+/gi, '-')}`;
  }

  // renderTimeline draws one mark per event; where events are closer than
  // a slot they share the slot's mark, which jumps to the first of them.
  function renderTimeline() {
    if (!P) return;
    const slots = new Map();
    for (let i = 0; i < P.events.length; i++) {
      const slot = Math.round(pos(i) * MAX_MARKS);
      const e = P.events[i];
      const have = slots.get(slot);
      if (!have) slots.set(slot, { i, count: 1, rank: markRank[e.type] ?? 1, type: e.type });
      else {
        have.count++;
        const r = markRank[e.type] ?? 1;
        if (r > have.rank) { have.rank = r; have.type = e.type; }
      }
    }
    const frag = document.createDocumentFragment();
    for (const [slot, m] of slots) {
      const e = P.events[m.i];
      const mark = el('span', {
        className: `mark ${typeClass(m.type)}`,
        title: m.count > 1 ? `#${e.seq} ${e.type} and ${m.count - 1} more` : `#${e.seq} ${e.type} at ${fmtClock(e.offset_ms)}`,
        dataset: { index: String(m.i) },
      });
      mark.style.left = `${(slot / MAX_MARKS) * 100}%`;
      frag.append(mark);
    }
    $('#timeline-marks').replaceChildren(frag);
    updateCursor();
  }

  function updateCursor() {
    const x = P && P.cur >= 0 && P.events.length ? pos(P.cur) * 100 : 0;
    $('#timeline-cursor').style.left = `${x}%`;
    $('#timeline-progress').style.width = `${x}%`;
  }

  function updatePosition() {
    if (!P) return;
    const total = P.detail ? Math.max(P.detail.session.events, P.events.length) : P.events.length;
    const more = P.next !== null ? ' (loading…)' : '';
    $('#position').textContent = P.cur >= 0 ? `event ${P.cur + 1} of ${total}${more}` : `${total} events${more}`;
    const cur = P.cur >= 0 ? P.events[P.cur] : null;
    const end = P.events.length ? Math.max(P.duration, P.events[P.events.length - 1].offset_ms) : P.duration;
    $('#clock').textContent = `${fmtClock(cur ? cur.offset_ms : 0)} / ${fmtClock(end)}`;
    $('#goto').max = String(Math.max(0, P.events.length - 1));
    if (cur && document.activeElement !== $('#goto')) $('#goto').value = String(cur.seq);
  }

  // goTo makes event i the current one: the transcript shows the events
  // up to it (the last MAX_CARDS of them).
  function goTo(i) {
    if (!P || P.events.length === 0) return;
    i = Math.max(0, Math.min(i, P.events.length - 1));
    const t = $('#transcript');
    const prev = t.querySelector('.event.current');
    if (prev) prev.classList.remove('current');
    if (i === P.cur + 1 && P.cur >= 0 && t.lastElementChild && Number(t.lastElementChild.dataset.seq) === P.events[P.cur].seq) {
      t.append(card(P.events[i]));
      while (t.querySelectorAll('.event').length > MAX_CARDS) {
        t.querySelector('.event').remove();
        P.firstCard++;
      }
      updateElided(t);
    } else {
      const frag = document.createDocumentFragment();
      P.firstCard = Math.max(0, i - MAX_CARDS + 1);
      for (let j = P.firstCard; j <= i; j++) frag.append(card(P.events[j]));
      t.replaceChildren(frag);
      updateElided(t);
    }
    P.cur = i;
    const c = t.lastElementChild;
    if (c) {
      c.classList.add('current');
      c.scrollIntoView({ block: 'nearest' });
    }
    updateCursor();
    updatePosition();
  }

  function updateElided(t) {
    let note = t.querySelector('.elided');
    if (P.firstCard === 0) { if (note) note.remove(); return; }
    if (!note) { note = el('p', { className: 'elided' }); t.prepend(note); }
    note.textContent = `${P.firstCard} earlier events are not shown here: click the timeline or enter an event number to go back.`;
  }

  function setPlaying(on) {
    if (P) P.playing = on;
    const b = $('#play');
    b.textContent = on ? '❚❚ Pause' : '▶ Play';
    b.setAttribute('aria-label', on ? 'Pause' : 'Play');
    b.classList.toggle('playing', on);
  }

  function play() {
    if (!P || P.events.length === 0) return;
    if (P.cur >= P.events.length - 1 && P.next === null) {
      // At the end: play again from the start.
      P.cur = -1;
      $('#transcript').replaceChildren();
    }
    setPlaying(true);
    step();
  }

  function pause() {
    if (P) clearTimeout(P.timer);
    setPlaying(false);
  }

  // step shows the next event after the time that separated it from the
  // current one, at the chosen speed.
  async function step() {
    const p = P;
    if (!p || !p.playing) return;
    clearTimeout(p.timer);
    const speed = $('#speed').value;
    if (speed === 'instant') {
      try {
        while (P === p && p.playing && p.next !== null && p.events.length < PREFETCH) await loadMore(p);
      } catch (_) { /* shown */ }
      if (P !== p || !p.playing) return;
      goTo(p.events.length - 1);
      setPlaying(false);
      return;
    }
    const n = p.cur + 1;
    if (n >= p.events.length) {
      if (p.next !== null) {
        loadMore(p).then(step, () => setPlaying(false));
        return;
      }
      setPlaying(false);
      return;
    }
    if (p.next !== null && p.events.length - n < PAGE_EVENTS / 4) loadMore(p).catch(() => {});
    const from = p.cur >= 0 ? p.events[p.cur].offset_ms : p.events[0].offset_ms;
    const gap = Math.min(MAX_GAP_MS, Math.max(0, (p.events[n].offset_ms - from) / Number(speed)));
    p.timer = setTimeout(() => {
      if (P !== p || !p.playing) return;
      goTo(n);
      step();
    }, gap);
  }

  async function jumpToSeq(seq) {
    const p = P;
    if (!p || !Number.isFinite(seq) || seq < 0) return;
    pause();
    try {
      while (P === p && seq >= p.events.length && p.next !== null) await loadMore(p);
    } catch (_) { return; }
    if (P === p) goTo(seq);
  }

  // ---- event cards ----

  function card(e) {
    const d = e.data || {};
    const c = el('div', { className: `event ${typeClass(e.type)}`, dataset: { seq: String(e.seq), type: e.type } });
    if (P && P.broken && e.seq >= P.broken.seq) c.classList.add('untrusted');
    const head = el('div', { className: 'ev-head' },
      el('span', { className: 'seq', text: `#${e.seq}` }),
      el('span', { className: 'offset', text: `+${fmtClock(e.offset_ms)}`, title: fmtTime(e.time) }),
      el('span', { className: 'type', text: e.type }));
    c.append(head);
    if (e.invalid) {
      c.append(el('p', { className: 'error', text: 'Damaged record: its data is not JSON.' }));
      return c;
    }
    const render = renderers[e.type];
    if (render) render(c, head, d); else c.append(el('pre', { className: 'json', text: JSON.stringify(d, null, 2) }));
    return c;
  }

  function kvList(pairs) {
    const dl = el('dl', { className: 'kvs' });
    for (const [k, v] of pairs) {
      if (v === undefined || v === null || v === '') continue;
      dl.append(el('div', { className: 'kv' }, el('dt', { text: k }), el('dd', null, typeof v === 'object' ? v : String(v))));
    }
    return dl;
  }

  function verdictPill(d) {
    if (!d.verdict) return null;
    return pill(d.verdict, d.verdict === 'allow' ? 'v-allow' : 'v-deny');
  }

  function decision(d) {
    if (d.verdict !== 'deny' && !d.rule) return null;
    const parts = [];
    if (d.rule) parts.push(`rule ${d.rule}`);
    if (d.reason) parts.push(d.reason);
    return el('p', { className: d.verdict === 'deny' ? 'deny' : 'rule', text: (d.verdict === 'deny' ? 'Denied: ' : 'Allowed by ') + parts.join(': ') });
  }

  function nullCell() { return el('span', { className: 'null', text: 'NULL' }); }

  const renderers = {
    'session.start'(c, head, d) {
      c.append(kvList([
        ['identity', d.identity], ['groups', d.groups ? d.groups.join(', ') : null], ['source', d.source],
        ['service', d.service], ['protocol', d.protocol], ['agent', d.agent], ['transport', d.transport],
        ['database', d.database], ['db user', d.db_user],
      ]));
    },
    'session.end'(c, head, d) {
      head.append(outcomePill(d.outcome));
      c.append(kvList([
        ['bytes in / out', `${fmtBytes(d.bytes_in)} / ${fmtBytes(d.bytes_out)}`],
        ['duration', fmtDuration(d.duration_ms)], ['error', d.error],
      ]));
    },
    'recording.seal'(c, head, d) {
      c.append(el('p', { className: 'muted', text: `Sealed with audit key ${d.key || '?'}.` }));
    },
    'authz.deny'(c, head, d) {
      c.append(el('p', { className: 'deny', text: `Denied by ${d.rule || '?'}${d.reason ? `: ${d.reason}` : ''}` }));
    },
    'tcp.data'(c, head, d) {
      const dir = d.direction === 'in' ? 'client → service' : d.direction === 'out' ? 'service → client' : d.direction;
      head.append(el('span', { className: 'bytes', text: `${dir}: ${fmtBytes(d.bytes)}` }));
      c.classList.add('compact');
    },
    'postgres.query'(c, head, d) {
      head.append(verdictPill(d) || '', d.class ? pill(d.class, 'class') : '',
        el('span', { className: 'muted', text: `${d.protocol || ''}${d.prepared ? ` (prepared ${d.prepared})` : ''}` }),
        d.duration_ms ? el('span', { className: 'dur', text: fmtDuration(d.duration_ms) }) : '');
      c.append(el('pre', { className: 'sql', text: d.sql || '' }));
      if (d.params && d.params.length) {
        const ol = el('ol', { className: 'params' });
        d.params.forEach((v, i) => {
          ol.append(el('li', null, el('span', { className: 'pname', text: `$${i + 1} = ` }), v === null ? nullCell() : el('code', { text: v })));
        });
        c.append(ol);
      }
      const dec = decision(d);
      if (dec) c.append(dec);
      if (d.columns && d.columns.length) {
        const table = el('table', { className: 'result' });
        table.append(el('thead', null, el('tr', null, ...d.columns.map((n) => el('th', { text: n })))));
        const tb = el('tbody');
        for (const row of d.result || []) {
          tb.append(el('tr', null, ...row.map((v) => el('td', null, v === null ? nullCell() : v))));
        }
        table.append(tb);
        c.append(el('div', { className: 'result-wrap' }, table));
        const shown = (d.result || []).length;
        if (d.rows > shown) c.append(el('p', { className: 'muted', text: `${shown} of ${d.rows} rows captured.` }));
      }
      if (d.completed && d.completed.length) {
        c.append(el('p', { className: 'completed' }, el('span', { className: 'muted', text: 'completed: ' }), d.completed.join(', '),
          el('span', { className: 'muted', text: ` · ${d.rows} rows` })));
      }
      if (d.error) c.append(el('p', { className: 'error', text: `ERROR${d.code ? ` ${d.code}` : ''}: ${d.error}` }));
    },
    'http.request'(c, head, d) {
      const st = Number(d.status) || 0;
      head.append(verdictPill(d) || '', el('span', { className: 'dur', text: fmtDuration(d.duration_ms) }));
      c.append(el('p', { className: 'request' },
        el('span', { className: 'method', text: d.method || '' }), ' ',
        el('code', { className: 'path', text: (d.path || '') + (d.query ? `?${d.query}` : '') }), ' → ',
        pill(String(st), `s-${Math.floor(st / 100)}xx`)));
      c.append(kvList([
        ['bytes in / out', `${fmtBytes(d.bytes_in)} / ${fmtBytes(d.bytes_out)}`], ['auth', d.auth],
        ['identity', d.identity], ['upgrade', d.upgrade],
      ]));
      const dec = decision(d);
      if (dec) c.append(dec);
      if (d.error) c.append(el('p', { className: 'error', text: d.error }));
    },
    'grpc.call'(c, head, d) {
      const code = Number(d.status) || 0;
      head.append(verdictPill(d) || '', el('span', { className: 'dur', text: fmtDuration(d.duration_ms) }));
      c.append(el('p', { className: 'request' },
        el('code', { className: 'path', text: d.method || '' }), ' → ',
        pill(`${code} ${grpcCodes[code] || ''}`.trim(), code === 0 ? 's-2xx' : 's-5xx')));
      c.append(kvList([
        ['message', d.message], ['bytes in / out', `${fmtBytes(d.bytes_in)} / ${fmtBytes(d.bytes_out)}`],
        ['auth', d.auth], ['identity', d.identity],
      ]));
      const dec = decision(d);
      if (dec) c.append(dec);
    },
  };

  // ---- routing and wiring ----

  function route() {
    const h = location.hash.replace(/^#/, '') || '/';
    const q = h.indexOf('?');
    const path = q >= 0 ? h.slice(0, q) : h;
    const params = new URLSearchParams(q >= 0 ? h.slice(q + 1) : '');
    if (path.startsWith('/session/')) {
      let id;
      try { id = decodeURIComponent(path.slice('/session/'.length)); } catch (_) { id = ''; }
      openSession(id);
    } else {
      showList(params);
    }
  }

  function init() {
    $('#filters').addEventListener('submit', (ev) => { ev.preventDefault(); goList(formParams()); });
    $('#clear').addEventListener('click', () => { fillForm(new URLSearchParams()); goList(new URLSearchParams()); });
    const tbody = $('#sessions tbody');
    tbody.addEventListener('click', (ev) => openRow(ev.target.closest('tr')));
    tbody.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') openRow(ev.target.closest('tr')); });
    $('#back').addEventListener('click', () => goList(listParams));
    $('#home').addEventListener('click', (ev) => { ev.preventDefault(); goList(new URLSearchParams()); });
    $('#play').addEventListener('click', () => { if (P && P.playing) pause(); else play(); });
    $('#speed').addEventListener('change', () => { if (P && P.playing) step(); });
    $('#step-back').addEventListener('click', () => { pause(); if (P) goTo(P.cur - 1); });
    $('#step-next').addEventListener('click', () => { pause(); if (P) jumpToSeq(P.cur + 1); });
    $('#goto').addEventListener('change', (ev) => jumpToSeq(parseInt(ev.target.value, 10)));
    $('#timeline').addEventListener('click', (ev) => {
      if (!P || P.events.length === 0) return;
      const m = ev.target.closest('.mark');
      if (m) { pause(); goTo(Number(m.dataset.index)); return; }
      // Elsewhere on the bar: the last event at or before that point.
      const r = $('#timeline').getBoundingClientRect();
      const x = (ev.clientX - r.left) / r.width;
      let i = 0;
      while (i + 1 < P.events.length && pos(i + 1) <= x) i++;
      pause();
      goTo(i);
    });
    document.addEventListener('keydown', (ev) => {
      if ($('#player-view').hidden || !P) return;
      const tag = ev.target && ev.target.tagName;
      if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA' || tag === 'BUTTON') return;
      if (ev.key === ' ') { ev.preventDefault(); if (P.playing) pause(); else play(); }
      if (ev.key === 'ArrowRight') { pause(); jumpToSeq(P.cur + 1); }
      if (ev.key === 'ArrowLeft') { pause(); goTo(P.cur - 1); }
    });
    window.addEventListener('hashchange', route);
    route();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
