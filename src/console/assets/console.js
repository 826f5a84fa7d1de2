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

  // A page with data-live follows the environment's change stream and fetches its live
  // part again on every change; never while a dialog is open (it would close it).
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
    fetch(root.getAttribute("data-part"), { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.status === 401) {
          // The session ended: the page itself now shows the sign-in form.
          window.location.reload();
          return null;
        }
        return response.ok ? response.text() : null;
      })
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

  if (root && window.EventSource) {
    var opened = false;
    var source = new EventSource(root.getAttribute("data-live"));
    source.addEventListener("change", refresh);
    source.addEventListener("snapshot", refresh);
    source.addEventListener("open", function () {
      // After a reconnection, catch up with whatever changed while it was down.
      if (opened) refresh();
      opened = true;
    });
  }

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
    fetch(url, { credentials: "same-origin" })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
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
