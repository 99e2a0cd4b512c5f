/* One page, three hosts (docs/contracts.md section 7):
   - a <script id="hit-config"> block (our server): POST JSON {token, choice, reason, telemetry}
     to submit_url, then go to next_url;
   - ?assignmentId=... (MTurk): ASSIGNMENT_ID_NOT_AVAILABLE is a read-only preview; otherwise the
     form posts assignmentId, choice, reason to turkSubmitTo + "/mturk/externalSubmit";
   - neither (opened as a file): a preview whose submit button is disabled. */
(function () {
  "use strict";
  var form = document.getElementById("hit-form");
  var button = document.getElementById("submit-button");
  var notice = document.getElementById("mode-notice");
  var status = document.getElementById("form-status");
  var reason = document.getElementById("reason");

  function say(element, text, isError) {
    element.textContent = text;
    element.hidden = false;
    element.classList.toggle("error", Boolean(isError));
  }

  function setMode(mode) {
    document.body.setAttribute("data-mode", mode);
  }

  function submitSiteAllowed(submitTo) {
    var site = submitTo.replace(/\/+$/, "");
    return site === "https://www.mturk.com" || site === "https://workersandbox.mturk.com" ||
      site === window.location.origin;
  }

  function disableForm() {
    for (var i = 0; i < form.elements.length; i++) {
      form.elements[i].disabled = true;
    }
  }

  /* "required" accepts blanks; a reason must have some text */
  reason.addEventListener("input", function () {
    reason.setCustomValidity(reason.value.trim() ? "" : "Please explain your choice.");
  });

  /* Telemetry sent with the answer (hitserver.quality): seconds the page was visible, times it
     lost the focus, paste events into the reason box and how many characters they pasted
     (never the pasted text), and the reason's length. */
  var watch = { visibleMs: 0, since: null, blurs: 0, pastes: 0, pastedChars: 0 };
  function now() { return window.performance ? window.performance.now() : Date.now(); }
  function visibilityChanged() {
    if (document.visibilityState === "visible") {
      if (watch.since === null) { watch.since = now(); }
    } else if (watch.since !== null) {
      watch.visibleMs += now() - watch.since;
      watch.since = null;
    }
  }
  visibilityChanged();
  document.addEventListener("visibilitychange", visibilityChanged);
  window.addEventListener("blur", function () { watch.blurs += 1; });
  reason.addEventListener("paste", function (event) {
    var data = event.clipboardData || window.clipboardData;
    var text = data ? data.getData("text") : "";
    watch.pastes += 1;
    watch.pastedChars += text ? text.length : 0;
  });
  function telemetry() {
    var visible = watch.visibleMs + (watch.since === null ? 0 : now() - watch.since);
    return {
      visible_s: Math.round(visible) / 1000,
      blur_count: watch.blurs,
      paste_count: watch.pastes,
      pasted_chars: watch.pastedChars,
      reason_chars: reason.value.length
    };
  }

  var configElement = document.getElementById("hit-config");
  var params = new URLSearchParams(window.location.search);

  if (configElement) {
    var config = null;
    try {
      config = JSON.parse(configElement.textContent);
    } catch (error) {
      config = null;
    }
    if (!config || typeof config.submit_url !== "string") {
      setMode("broken");
      disableForm();
      say(notice, "This task could not be set up. Please tell the requester.", true);
      return;
    }
    setMode("server");
    if (config.progress) {
      say(document.getElementById("progress"), String(config.progress));
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var checked = form.querySelector('input[name="choice"]:checked');
      var body = {
        token: config.token,
        choice: checked ? parseInt(checked.value, 10) : null,
        reason: reason.value,
        telemetry: telemetry()
      };
      button.disabled = true;
      say(status, "Saving your answer\u2026");
      fetch(config.submit_url, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(body),
        credentials: "same-origin"
      }).then(function (response) {
        if (response.ok) {
          say(status, "Saved. Thank you!");
          if (config.next_url) {
            window.location.assign(config.next_url);
          }
          return null;
        }
        return response.json().catch(function () { return {}; }).then(function (answer) {
          var why = (answer && (answer.error || answer.message)) || "HTTP " + response.status;
          say(status, "Your answer was not saved: " + why, true);
          button.disabled = false;
        });
      }, function () {
        say(status, "Could not reach the server; your answer was not saved. Please try again.", true);
        button.disabled = false;
      });
    });
  } else if (params.has("assignmentId")) {
    var assignmentId = params.get("assignmentId");
    var submitTo = params.get("turkSubmitTo");
    if (assignmentId === "ASSIGNMENT_ID_NOT_AVAILABLE") {
      setMode("mturk-preview");
      disableForm();
      say(notice, "Preview: accept this HIT to answer the question.");
    } else if (!submitTo) {
      setMode("broken");
      disableForm();
      say(notice, "This task could not be set up (no turkSubmitTo). Please tell the requester.", true);
    } else if (!submitSiteAllowed(submitTo)) {
      // A link can name any turkSubmitTo: answers go only to MTurk (or this page's own site).
      setMode("broken");
      disableForm();
      say(notice, "This task's link names a submit site that is not MTurk's; answers are not sent there.", true);
    } else {
      setMode("mturk");
      document.getElementById("assignment-id").value = assignmentId;
      form.action = submitTo.replace(/\/+$/, "") + "/mturk/externalSubmit";
      form.method = "post";
    }
  } else {
    setMode("file");
    button.disabled = true;
    say(notice, "Preview (opened as a file): you can look at the task, but answers cannot be submitted from here.");
  }
})();
