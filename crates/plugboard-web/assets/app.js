// plugboard dashboard: apply server-sent events to elements that ask for
// them (data-sse="URL", data-sse-event="NAME", default "running"),
// replacing their content with each event's HTML, then telling the page
// ("plugboard:swap" on the element).
(function () {
  function connect(el) {
    var source = new EventSource(el.getAttribute("data-sse"));
    var name = el.getAttribute("data-sse-event") || "running";
    var last = null;
    source.addEventListener(name, function (ev) {
      if (ev.data === last) { return; } // unchanged: keep the DOM (and any focus) as it is
      last = ev.data;
      el.innerHTML = ev.data;
      if (window.htmx) { window.htmx.process(el); }
      el.dispatchEvent(new CustomEvent("plugboard:swap", { bubbles: true }));
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
