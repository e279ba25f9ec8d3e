// Live updates: the server's Server-Sent Events say when its snapshot changed; the page then
// fetches its own content again (X-Partial: 1) and swaps it in. No framework, no build step.
(function () {
  "use strict";
  var body = document.body;
  var content = document.getElementById("content");
  var badge = document.getElementById("live");
  var shown = Number(body.dataset.version || 0);
  var busy = false, again = false;

  function setBadge(text, cls) {
    if (badge) { badge.textContent = text; badge.className = "live " + cls; }
  }

  function typing() {
    var el = document.activeElement;
    return el && content.contains(el) && (el.tagName === "INPUT" || el.tagName === "SELECT");
  }

  function refresh() {
    if (busy || typing()) { again = true; return; }  // never swap the form out from under the cursor
    busy = true;
    fetch(location.pathname + location.search, { headers: { "X-Partial": "1" }, credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        content.innerHTML = html;
        var stamp = content.querySelector("[data-version]");
        if (stamp) { shown = Number(stamp.dataset.version); body.dataset.version = String(shown); }
        body.dataset.liveUpdates = String(Number(body.dataset.liveUpdates || 0) + 1);
        setBadge("live", "on");
      })
      .catch(function () { setBadge("stale", "off"); })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  if (!window.EventSource || !content) { setBadge("no live updates", "off"); return; }
  var source = new EventSource("/events");
  source.addEventListener("open", function () { setBadge("live", "on"); });
  source.addEventListener("error", function () { setBadge("reconnecting", "off"); });
  source.addEventListener("changed", function (event) {
    var version = Number(JSON.parse(event.data).version);
    if (version !== shown) { refresh(); }
  });
  content.addEventListener("focusout", function () {
    if (again && !busy) { again = false; setTimeout(refresh, 0); }
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
