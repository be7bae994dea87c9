// plugboard dashboard, the plugin page: uptime and cost that tick between
// server events, the call panel (JSON check, run, progress, cancel, output)
// and the following log. Every string that comes from a plugin is inserted
// as text (textContent), never as HTML.
(function () {
  "use strict";

  function $(id) { return document.getElementById(id); }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function human(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s >= 3600) { return Math.floor(s / 3600) + "h" + pad(Math.floor((s % 3600) / 60)) + "m"; }
    if (s >= 60) { return Math.floor(s / 60) + "m" + pad(s % 60) + "s"; }
    return s + "s";
  }

  // --- Live state: tick uptime and accrued cost with the server's clock. ---
  var skew = 0;
  function readSkew() {
    var st = $("plugin-state");
    var now = st && Number(st.getAttribute("data-now"));
    if (now) { skew = now - Date.now(); }
  }
  function tick() {
    var now = Date.now() + skew;
    document.querySelectorAll("[data-since]").forEach(function (el) {
      el.textContent = human(now - Number(el.getAttribute("data-since")));
    });
    document.querySelectorAll("[data-billing-since]").forEach(function (el) {
      var hours = Math.max(0, now - Number(el.getAttribute("data-billing-since"))) / 3600000;
      el.textContent = "$" + (hours * Number(el.getAttribute("data-rate"))).toFixed(4);
    });
  }

  function setupCalls() {
    var panel = $("try-it");
    if (!panel || !window.fetch) { return; }
    var id = panel.getAttribute("data-plugin");
    var token = panel.getAttribute("data-csrf");
    var form = $("call-form"), input = $("call-input"), check = $("input-check");
    var run = $("run"), cancel = $("cancel"), notRunning = $("call-not-running");
    var progress = $("call-progress"), bar = $("progress-bar"), message = $("progress-message");
    var events = $("call-events"), result = $("call-result"), status = $("call-status"), output = $("call-output");
    var note = check.textContent;
    var current = null;
    var base = "/plugins/" + encodeURIComponent(id);
    var headers = { "Content-Type": "application/json", "X-CSRF-Token": token };

    function checkInput() {
      try {
        JSON.parse(input.value);
        check.textContent = "Valid JSON. " + note;
        check.className = "help";
        input.classList.remove("invalid");
        run.disabled = current !== null;
        return true;
      } catch (e) {
        check.textContent = "Not valid JSON: " + e.message;
        check.className = "help error";
        input.classList.add("invalid");
        run.disabled = true;
        return false;
      }
    }
    input.addEventListener("input", checkInput);
    checkInput();

    function done(outcome, text, detail) {
      status.textContent = text;
      output.textContent = detail;
      result.setAttribute("data-outcome", outcome);
      result.hidden = false;
      current = null;
      cancel.hidden = true;
      checkInput();
    }
    function failed(err, ms) {
      err = err || {};
      var code = err.code || "error";
      var took = ms === undefined ? "" : " after " + ms + " ms";
      if (code === "cancelled") {
        done("cancelled", "Cancelled" + took + ".", err.message || "");
      } else {
        done("error", "Failed" + took + " (" + code + ").", err.message || "");
      }
      output.setAttribute("data-code", code);
      if (code === "not_running") { notRunning.hidden = false; }
    }
    function onEvent(ev) {
      if (!current) { return; }
      if (ev.type === "started") {
        current.requestId = ev.request_id;
        cancel.disabled = false;
      } else if (ev.type === "progress") {
        progress.hidden = false;
        bar.value = ev.progress;
        message.textContent = Math.round(ev.progress * 100) + "%" + (ev.message ? " · " + ev.message : "");
      } else if (ev.type === "log") {
        var li = document.createElement("li");
        li.textContent = "[" + ev.level + "] " + ev.message;
        events.appendChild(li);
      } else if (ev.type === "result") {
        output.removeAttribute("data-code");
        done("ok", "Done in " + ev.duration_ms + " ms.", JSON.stringify(ev.output, null, 2));
      } else if (ev.type === "error") {
        failed(ev.error, ev.duration_ms);
      }
    }
    function read(reader) {
      var decoder = new TextDecoder();
      var buf = "";
      function pump() {
        return reader.read().then(function (r) {
          if (r.done) {
            if (current) { failed({ code: "worker_error", message: "the answer ended without a result" }); }
            return;
          }
          buf += decoder.decode(r.value, { stream: true });
          var i;
          while ((i = buf.indexOf("\n")) >= 0) {
            var line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            if (line.trim()) { onEvent(JSON.parse(line)); }
          }
          return pump();
        });
      }
      return pump();
    }

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (current || !checkInput()) { return; }
      var value = JSON.parse(input.value);
      events.textContent = "";
      progress.hidden = true;
      bar.value = 0;
      message.textContent = "";
      output.textContent = "";
      output.removeAttribute("data-code");
      result.setAttribute("data-outcome", "running");
      status.textContent = "Running…";
      result.hidden = false;
      current = { requestId: null };
      run.disabled = true;
      cancel.hidden = false;
      cancel.disabled = true;
      fetch(base + "/call", {
        method: "POST", headers: headers, credentials: "same-origin",
        body: JSON.stringify({ input: value })
      }).then(function (resp) {
        if (!resp.ok) {
          return resp.json().catch(function () {
            return { error: { code: "http_" + resp.status, message: resp.statusText } };
          }).then(function (body) { failed(body.error); });
        }
        return read(resp.body.getReader());
      }).catch(function (e) {
        if (current) { failed({ code: "network", message: String(e) }); }
      });
    });

    cancel.addEventListener("click", function () {
      if (!current || !current.requestId) { return; }
      cancel.disabled = true;
      status.textContent = "Cancelling…";
      fetch(base + "/cancel", {
        method: "POST", headers: headers, credentials: "same-origin",
        body: JSON.stringify({ request_id: current.requestId })
      }).then(function (r) { return r.json(); }).then(function (b) {
        if (!current) { return; }
        if (b.error) {
          status.textContent = "Cancel refused: " + b.error.message;
          cancel.disabled = false;
        } else if (!b.cancelled) {
          status.textContent = "The plugin has no such call running (it may have just finished).";
        }
      }).catch(function (e) {
        if (current) { status.textContent = "Cancel failed: " + String(e); cancel.disabled = false; }
      });
    });

    // The notice under the panel follows the live state.
    document.addEventListener("plugboard:swap", function () {
      var st = $("plugin-state");
      if (st) { notRunning.hidden = st.getAttribute("data-state") === "running"; }
    });
  }

  function setupLog() {
    var log = $("plugin-log");
    if (!log) { return; }
    var filter = $("log-filter"), follow = $("log-follow");
    filter.addEventListener("change", function () { log.setAttribute("data-filter", filter.value); });
    if (!window.EventSource) { return; }
    var MAX = 2000;
    function streamOf(l) {
      return l.indexOf("out|") === 0 ? "stdout" : (l.indexOf("err|") === 0 ? "stderr" : "host");
    }
    function add(lines) {
      var bottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
      var empty = log.querySelector(".empty");
      if (empty && lines.length) { empty.remove(); }
      lines.forEach(function (l) {
        var span = document.createElement("span");
        span.className = "ln";
        span.setAttribute("data-stream", streamOf(l));
        span.textContent = l + "\n";
        log.appendChild(span);
      });
      while (log.children.length > MAX) { log.removeChild(log.firstChild); }
      if (bottom) { log.scrollTop = log.scrollHeight; }
    }
    var source = new EventSource(log.getAttribute("data-follow"));
    source.addEventListener("reset", function (ev) {
      log.textContent = "";
      var lines = JSON.parse(ev.data);
      if (!lines.length) {
        var span = document.createElement("span");
        span.className = "ln empty";
        span.setAttribute("data-stream", "host");
        span.textContent = "(empty)\n";
        log.appendChild(span);
      }
      add(lines);
      log.scrollTop = log.scrollHeight;
      follow.textContent = "following";
      log.setAttribute("data-following", "1");
    });
    source.addEventListener("lines", function (ev) { add(JSON.parse(ev.data)); });
    source.onerror = function () { follow.textContent = "reconnecting…"; };
  }

  document.addEventListener("DOMContentLoaded", function () {
    readSkew();
    document.addEventListener("plugboard:swap", readSkew);
    setInterval(tick, 1000);
    setupCalls();
    setupLog();
  });
})();
