// cohort console: dialogs, live updates and kill confirmation. Plain JavaScript, no
// dependencies, nothing fetched but this server's own pages.
(function () {
  "use strict";

  function dialogOpen() {
    return document.querySelector("dialog[open]") !== null;
  }

  // Buttons with data-dialog open the named <dialog>; data-close closes the one they are in.
  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute("data-dialog"));
      if (dialog && dialog.showModal) {
        event.preventDefault();
        dialog.showModal();
        var field = dialog.querySelector("textarea, input:not([type=hidden])");
        if (field) field.focus();
      }
      return;
    }
    var closer = event.target.closest("[data-close]");
    if (closer) {
      var open = closer.closest("dialog");
      if (open) open.close();
    }
  });

  // A signed-out answer (401: expired, revoked) sends the page to sign-in, which comes
  // back to this page (by GET, even when it was a form's answer) afterwards.
  function get(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } }).then(function (response) {
      if (response.status === 401) {
        var here = window.location.pathname + window.location.search;
        window.location.assign("/console/sign-in?ended=1&next=" + encodeURIComponent(here));
        return null;
      }
      return response.ok ? response.text() : null;
    });
  }

  // A page with data-live follows the environment's change stream and fetches its live
  // part again on every change (and every data-every ms, for what is not a change);
  // never while a dialog is open (it would close it).
  var root = document.querySelector("[data-live]");
  var pending = false;
  var busy = false;

  function refresh() {
    if (!root) return;
    if (busy || dialogOpen()) {
      pending = true;
      return;
    }
    busy = true;
    get(root.getAttribute("data-part"))
      .then(function (html) {
        var part = document.getElementById("live-part");
        if (html && part) part.outerHTML = html;
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (pending && !dialogOpen()) {
          pending = false;
          refresh();
        }
      });
  }

  document.addEventListener(
    "close",
    function () {
      if (pending && !dialogOpen()) {
        pending = false;
        refresh();
      }
    },
    true
  );

  function follow() {
    var opened = false;
    var source = new EventSource(root.getAttribute("data-live"));
    source.addEventListener("change", refresh);
    source.addEventListener("snapshot", refresh);
    source.addEventListener("open", function () {
      // After a reconnection, catch up with whatever changed while it was down.
      if (opened) refresh();
      opened = true;
    });
    source.addEventListener("error", function () {
      // Closed for good (a refusal such as 401, not an outage it retries by itself):
      // the refresh finds out why, and the stream is opened again a little later.
      if (source.readyState === EventSource.CLOSED) {
        refresh();
        setTimeout(follow, 5000);
      }
    });
  }
  if (root && window.EventSource) follow();
  var every = root ? Number(root.getAttribute("data-every")) : 0;
  if (every > 0) setInterval(refresh, every);

  // When the session's token expires, go to sign-in then rather than at the next
  // change: ask from its end on (the server allows some clock skew) until refused.
  var left = Number(document.body.getAttribute("data-session-left"));
  function checkSession() {
    get(root ? root.getAttribute("data-part") : window.location.pathname + window.location.search)
      .catch(function () {})
      .then(function () {
        setTimeout(checkSession, 3000);
      });
  }
  if (left > 0 && left < 1000000) setTimeout(checkSession, left * 1000 + 1000);

  // Forms with data-confirm ask before they send (abort, promote).
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // The ramp plan editor: the server words the plan as it is typed.
  var plan = document.querySelector("form[data-preview]");
  var timer = null;
  function preview() {
    var body = new URLSearchParams(new FormData(plan));
    fetch(plan.getAttribute("data-preview"), { method: "POST", credentials: "same-origin", body: body })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        var line = document.getElementById("plan-preview");
        if (html && line) line.outerHTML = html;
      })
      .catch(function () {});
  }
  if (plan) {
    plan.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(preview, 250);
    });
  }

  // A kill's confirmation: ask again every half second until every SDK applied it.
  var tries = 0;
  function pollReach() {
    var line = document.getElementById("reach");
    if (!line || line.getAttribute("data-confirmed") === "true" || tries++ > 240) return;
    var url =
      "/console/envs/" + encodeURIComponent(line.getAttribute("data-env")) +
      "/reach?revision=" + encodeURIComponent(line.getAttribute("data-revision"));
    get(url)
      .then(function (html) {
        var current = document.getElementById("reach");
        if (html && current) current.outerHTML = html;
      })
      .catch(function () {})
      .then(function () {
        setTimeout(pollReach, 500);
      });
  }
  setTimeout(pollReach, 300);
})();
