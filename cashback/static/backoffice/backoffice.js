// Copy buttons for one-time secrets: served from this site ('self'), no inline script.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("code.one-time-secret").forEach(function (code) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "copy-secret";
    button.textContent = "Copy";
    button.addEventListener("click", function () {
      var done = function () { button.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(code.textContent).then(done, function () { select(code); });
      } else {
        select(code);
        try { if (document.execCommand("copy")) { done(); } } catch (e) { /* selected anyway */ }
      }
    });
    code.insertAdjacentElement("afterend", button);
  });
  function select(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
});
