// Live updates for fsm serve's pages over Server-Sent Events (no framework, no CDN).
"use strict";
(function () {
  const body = document.body;
  const page = body.dataset.page;
  const dot = document.getElementById("live");
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function onTransition(message) {
    const item = JSON.parse(message.data);
    const t = item.transition;
    if (page === "entities") {
      const tbody = document.querySelector('[data-testid="live"] tbody');
      const tr = document.createElement("tr");
      tr.dataset.entity = t.entity_id;
      tr.dataset.seq = String(t.seq);
      cell(tr, t.recorded_at.replace("T", " ").slice(0, 23));
      const td = cell(tr, "");
      const a = document.createElement("a");
      a.href = "/entities/" + encodeURIComponent(t.entity_id);
      a.textContent = t.entity_id;
      td.appendChild(a);
      cell(tr, t.from_state + " → " + t.to_state);
      cell(tr, t.event);
      cell(tr, t.source);
      tbody.insertBefore(tr, tbody.firstChild);
      while (tbody.rows.length > 200) tbody.deleteRow(-1);
      const shown = document.querySelector('tr[data-id="' + CSS.escape(t.entity_id) + '"] .state');
      if (shown) shown.textContent = t.to_state;
    } else if (page === "entity") {
      const tbody = document.querySelector('[data-testid="history"] tbody');
      if (tbody.querySelector('tr[data-seq="' + t.seq + '"]')) return;
      const tr = document.createElement("tr");
      tr.dataset.seq = String(t.seq);
      tr.className = "new";
      cell(tr, String(t.seq));
      cell(tr, t.from_state + " → " + t.to_state);
      cell(tr, t.event);
      cell(tr, t.source);
      cell(tr, t.observed_at.replace("T", " ").slice(0, 23));
      cell(tr, t.recorded_at.replace("T", " ").slice(0, 23));
      cell(tr, Object.keys(t.payload).length ? JSON.stringify(t.payload) : "");
      tbody.appendChild(tr);
      document.querySelector('[data-testid="state"]').textContent = t.to_state;
    } else if (page === "overview") {
      refreshOverview();
    }
  }
  let pending = null;
  function refreshOverview() {
    if (pending) return;
    pending = setTimeout(function () {
      pending = null;
      fetch(window.location.href, { headers: { Accept: "text/html" } })
        .then(function (r) { return r.text(); })
        .then(function (html) {
          const next = new DOMParser().parseFromString(html, "text/html").getElementById("overview");
          const here = document.getElementById("overview");
          if (next && here) here.replaceWith(next);
        })
        .catch(function () {});
    }, 500);
  }
  const url = body.dataset.stream || (page === "overview" ? "/api/stream" : null);
  if (!url || !window.EventSource) return;
  const source = new EventSource(url);
  source.addEventListener("ready", function () { dot.classList.add("on"); body.dataset.live = "ready"; });
  source.addEventListener("transition", onTransition);
  source.onerror = function () { dot.classList.remove("on"); };
})();
