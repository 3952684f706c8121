// treasuryd console: local times (UTC on hover), live countdowns, confirmations. Progressive:
// every page works without it.
"use strict";
(function () {
  function local(el) {
    var d = new Date(el.getAttribute("datetime"));
    if (!isNaN(d)) { el.textContent = d.toLocaleString(); }
  }
  function left(ms) {
    if (ms <= 0) { return "due now"; }
    var s = Math.floor(ms / 1000), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60), r = s % 60;
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + r + "s left";
  }
  function tick() {
    document.querySelectorAll(".countdown[data-deadline]").forEach(function (el) {
      var ms = new Date(el.getAttribute("data-deadline")) - new Date();
      el.textContent = left(ms);
      el.classList.toggle("due", ms <= 0);
    });
  }
  document.querySelectorAll("time[data-local]").forEach(local);
  tick();
  setInterval(tick, 1000);
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.getAttribute("data-confirm"))) { e.preventDefault(); }
    });
  });
})();
