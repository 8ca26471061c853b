// The live tail: server-sent events from /console/tail/stream, shown newest first. Text only
// (textContent), never HTML from an event.
(function () {
  "use strict";
  var list = document.getElementById("tail");
  var status = document.getElementById("tail-status");
  var subject = list && list.dataset.subject;
  if (!subject) {
    return;
  }
  var source = new EventSource("/console/tail/stream?subject=" + encodeURIComponent(subject));
  source.addEventListener("open", function () {
    status.textContent = "Watching " + subject;
  });
  source.addEventListener("error", function () {
    status.textContent = "Disconnected; reconnecting…";
  });
  source.addEventListener("event", function (message) {
    var event = JSON.parse(message.data);
    var item = document.createElement("li");
    item.className = "tail-event";
    var head = document.createElement("div");
    head.className = "tail-head";
    [event.received_at, event.subject, event.id, event.tenant ? "tenant " + event.tenant : ""].forEach(function (text) {
      if (!text) {
        return;
      }
      var part = document.createElement("code");
      part.textContent = text;
      head.appendChild(part);
    });
    var body = document.createElement("pre");
    body.textContent = event.payload;
    item.appendChild(head);
    item.appendChild(body);
    list.insertBefore(item, list.firstChild);
    while (list.children.length > 200) {
      list.removeChild(list.lastChild);
    }
  });
  window.addEventListener("pagehide", function () {
    source.close();
  });
})();
