/* Egress Portal: small progressive enhancements. No inline script anywhere
   (a strict CSP comes later): behaviour hangs off data- attributes. */
(function () {
  "use strict";

  var COPY_SELECTOR = "[data-copy], [data-copy-target]";

  // Copy buttons are useless without JavaScript, so they start hidden.
  function reveal(root) {
    if (!root || !root.querySelectorAll) return;
    if (root.matches && root.matches(COPY_SELECTOR)) root.hidden = false;
    root.querySelectorAll(COPY_SELECTOR).forEach(function (button) { button.hidden = false; });
  }

  function copyWithSelection(text) {
    // Fallback for pages served over plain http, where navigator.clipboard is missing.
    var buffer = document.createElement("textarea");
    buffer.value = text;
    buffer.setAttribute("readonly", "");
    buffer.className = "copy-buffer";
    document.body.appendChild(buffer);
    buffer.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(buffer);
    return ok;
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      // Some browsers leave writeText pending behind a permission prompt: do not wait forever.
      var timeout = new Promise(function (resolve) { window.setTimeout(function () { resolve("timeout"); }, 800); });
      return Promise.race([navigator.clipboard.writeText(text).then(function () { return true; }), timeout]).then(
        function (result) { return result === true ? true : copyWithSelection(text); },
        function () { return copyWithSelection(text); }
      );
    }
    return Promise.resolve(copyWithSelection(text));
  }

  function announce(text) {
    var status = document.getElementById("copy-status");
    if (!status) return;
    status.textContent = "";
    window.setTimeout(function () { status.textContent = text; }, 50);
  }

  function feedback(button, ok) {
    var label = button.querySelector(".copy__label");
    if (!label) return;
    window.clearTimeout(button._copyTimer);
    label.textContent = ok ? "Copied" : "Copy failed";
    button.classList.toggle("is-copied", ok);
    button._copyTimer = window.setTimeout(function () {
      label.textContent = "Copy";
      button.classList.remove("is-copied");
    }, 1600);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest(COPY_SELECTOR);
    if (!button) return;
    var text = button.getAttribute("data-copy");
    if (text === null) {
      var source = document.getElementById(button.getAttribute("data-copy-target"));
      text = source ? source.textContent.trim() : "";
    }
    if (!text) return;
    copyText(text).then(function (ok) {
      feedback(button, ok);
      announce(ok ? "Copied to the clipboard." : "Could not copy; select the text and copy it by hand.");
    });
  });

  // When a swap removes the focused control (the toggle becomes its opposite),
  // keep keyboard and screen-reader users in the panel instead of at the top.
  // (A submitted button is disabled while its request runs and loses focus then,
  // so a submit from the panel counts too.)
  var focusWasInPanel = false;
  document.addEventListener("submit", function (event) {
    var panel = document.getElementById("egress-panel");
    if (panel && panel.contains(event.target)) focusWasInPanel = true;
  });
  document.addEventListener("htmx:beforeSwap", function (event) {
    var panel = document.getElementById("egress-panel");
    if (panel && event.detail.target === panel && panel.contains(document.activeElement)) focusWasInPanel = true;
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    var panel = document.getElementById("egress-panel");
    if (!focusWasInPanel || !panel || event.detail.target !== panel) return;
    focusWasInPanel = false;
    if (panel.contains(document.activeElement)) return;
    var status = panel.querySelector("[data-testid='egress-status']");
    if (status) status.focus();
  });

  // An htmx request the portal could not serve is never silent: the session ended
  // (401), the page is out of date (403 after logging in again elsewhere: its CSRF
  // token is stale), or the portal did not answer. Say so and offer what helps.
  var PROBLEMS = {
    "session-expired": "Your session has ended, so nothing was changed. Log in again to continue.",
    "csrf": "This page is out of date (you may have logged in or out in another tab), so nothing was changed. Reload it and try again.",
    "forbidden": "You are not allowed to do this any more, so nothing was changed. Reload the page to see the current state.",
    "server": "Something went wrong on our side, so this may not have happened. Reload the page to see the current state.",
    "network": "The portal did not answer. Check your connection, then reload the page."
  };

  function showProblem(kind, loginUrl) {
    var banner = document.getElementById("problem-banner");
    if (!banner) return;
    var text = document.getElementById("problem-text");
    var login = banner.querySelector("[data-problem-action='login']");
    text.textContent = PROBLEMS[kind] || PROBLEMS.server;
    banner.setAttribute("data-problem", kind);
    if (kind === "session-expired" || kind === "csrf") {
      var next = encodeURIComponent(window.location.pathname + window.location.search);
      login.href = loginUrl || (document.body.getAttribute("data-login-url") + "?next=" + next);
      login.hidden = false;
    } else {
      login.hidden = true;
    }
    banner.hidden = false;
    var first = banner.querySelector(kind === "session-expired" ? "[data-problem-action='login']" : "button");
    if (first) first.focus();
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var kind = xhr.getResponseHeader("X-Portal-Problem");
    if (!kind) {
      if (xhr.status === 401) kind = "session-expired";
      else if (xhr.status === 403) kind = "forbidden";
      else kind = "server";
    }
    showProblem(kind, xhr.getResponseHeader("X-Portal-Login"));
  });
  document.addEventListener("htmx:sendError", function () { showProblem("network"); });
  document.addEventListener("click", function (event) {
    var reload = event.target.closest("[data-problem-action='reload']");
    if (reload) window.location.reload();
  });

  // A "Check egress" answer belongs to the status it was taken in: once the
  // status changes it would mislead (the old shared address next to "Assigned").
  document.addEventListener("htmx:afterSettle", function (event) {
    var panel = document.getElementById("egress-panel");
    if (!panel || event.detail.target !== panel) return;
    var body = panel.querySelector("[data-testid='egress-panel-body']");
    var result = document.querySelector("[data-testid='check-egress-result']");
    if (!body || !result) return;
    if (result.getAttribute("data-egress-status") !== body.getAttribute("data-status")) {
      result.parentNode.textContent = "";
    }
  });

  // The disable confirmation takes the panel's place: put the reader on its question.
  document.addEventListener("htmx:afterSettle", function (event) {
    var heading = event.detail.target && event.detail.target.querySelector
      ? event.detail.target.querySelector("#disable-confirm-heading") : null;
    if (heading) heading.focus();
  });

  reveal(document.body);
  // htmx fires htmx:load for every piece of content it swaps in.
  document.addEventListener("htmx:load", function (event) { reveal(event.target); });
})();
