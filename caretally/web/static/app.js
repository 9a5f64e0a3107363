// caretally — progressive enhancement only: every page works without this file.
// 1. Inactivity: the server signs a session out after N idle minutes; warn two minutes
//    before, and go to the sign-in page when the time is up (the server already refuses).
// 2. Timer: a running server-kept timer ticks on screen (a reload re-reads the server).
// 3. Print buttons, shown only when printing can be started from the page.
// 4. Forms marked data-confirm ask before a step that cannot be undone (lock a month).
(function () {
  "use strict";

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function clock(seconds) {
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return h ? h + ":" + pad(m) + ":" + pad(s) : m + ":" + pad(s);
  }

  function idle() {
    var body = document.body;
    var seconds = parseInt(body.getAttribute("data-idle-seconds") || "0", 10);
    var warning = document.getElementById("idle-warning");
    if (!seconds || !warning) { return; }
    var signIn = body.getAttribute("data-sign-in-url") || "/signin";
    var lead = Math.min(120, Math.floor(seconds / 2));
    window.setTimeout(function () {
      var text = warning.querySelector("[data-idle-text]");
      if (text) {
        text.textContent = "For your patients' privacy you will be signed out in " +
          Math.round(lead / 60) + " minute" + (Math.round(lead / 60) === 1 ? "" : "s") +
          " unless you continue.";
      }
      warning.hidden = false;
    }, (seconds - lead) * 1000);
    window.setTimeout(function () {
      window.location.assign(signIn + (signIn.indexOf("?") < 0 ? "?" : "&") + "expired=1");
    }, seconds * 1000);
  }

  function timers() {
    var nodes = document.querySelectorAll("[data-timer-clock]");
    Array.prototype.forEach.call(nodes, function (node) {
      if (node.getAttribute("data-state") !== "running") { return; }
      var base = parseInt(node.getAttribute("data-elapsed") || "0", 10);
      var loaded = Date.now();
      window.setInterval(function () {
        node.textContent = clock(base + Math.floor((Date.now() - loaded) / 1000));
      }, 1000);
    });
  }

  function printing() {
    var buttons = document.querySelectorAll("[data-print]");
    Array.prototype.forEach.call(buttons, function (button) {
      button.hidden = false;
      button.addEventListener("click", function () { window.print(); });
    });
  }

  function confirming() {
    var forms = document.querySelectorAll("form[data-confirm]");
    Array.prototype.forEach.call(forms, function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  }

  function start() { idle(); timers(); printing(); confirming(); }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();

// 5. Month close: follow a running month-run job (the page also refreshes itself every
//    few seconds without scripts); reload once it ends, to show the run.
(function () {
  "use strict";
  function follow() {
    var bar = document.querySelector("progress[data-job-url]");
    if (!bar || !window.fetch) { return; }
    var refresh = document.querySelector("meta[http-equiv=refresh]");
    if (refresh) { refresh.parentNode.removeChild(refresh); }
    var text = document.querySelector("[data-job-text]");
    function poll() {
      window.fetch(bar.getAttribute("data-job-url"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (job) {
          if (!job) { window.location.reload(); return; }
          bar.max = job.total || 1; bar.value = job.done;
          if (text) { text.textContent = job.text; }
          if (job.finished) { window.location.reload(); } else { window.setTimeout(poll, 1000); }
        })
        .catch(function () { window.setTimeout(poll, 3000); });
    }
    window.setTimeout(poll, 500);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", follow);
  } else {
    follow();
  }
})();
