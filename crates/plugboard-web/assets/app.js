// plugboard dashboard: apply server-sent events to elements that ask for
// them (data-sse="URL"), replacing their content with each event's HTML.
(function () {
  function connect(el) {
    var source = new EventSource(el.getAttribute("data-sse"));
    var last = null;
    source.addEventListener("running", function (ev) {
      if (ev.data === last) { return; } // unchanged: keep the DOM (and any focus) as it is
      last = ev.data;
      el.innerHTML = ev.data;
      if (window.htmx) { window.htmx.process(el); }
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-sse]").forEach(connect);
    var select = document.getElementById("plugin-select");
    var confirm = document.getElementById("confirm");
    if (select && confirm) {
      select.addEventListener("change", function () {
        confirm.setAttribute("href", "/plugins/" + encodeURIComponent(select.value) + "/config");
      });
    }
  });
})();
