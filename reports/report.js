// Downloads of the raw samples embedded in this page (no network: the data is inside, deflated).
(function () {
  "use strict";
  var metaNode = document.getElementById("raw-meta");
  var blobNode = document.getElementById("raw-samples");
  if (!metaNode || !blobNode) { return; }
  var meta = JSON.parse(metaNode.textContent);
  var cached = null;

  function samples() {
    if (cached) { return cached; }
    var b64 = blobNode.textContent.trim();
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    cached = new Response(stream).arrayBuffer().then(function (buf) {
      // Undo the byte shuffle: byte k of value i was stored at k * n + i.
      var shuffled = new Uint8Array(buf), n = shuffled.length / 4, plain = new Uint8Array(shuffled.length);
      for (var k = 0; k < 4; k++) {
        for (var j = 0; j < n; j++) { plain[j * 4 + k] = shuffled[k * n + j]; }
      }
      return new Float32Array(plain.buffer);
    });
    return cached;
  }

  function csvField(v) {
    var s = v === null || v === undefined ? "" : String(v);
    return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function save(name, text, type) {
    var url = URL.createObjectURL(new Blob([text], { type: type }));
    var a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
  }

  function download(format) {
    return samples().then(function (all) {
      if (format === "json") {
        var out = meta.map(function (m) {
          var copy = Object.assign({}, m);
          copy.samples_s = Array.from(all.subarray(m.samples[0], m.samples[0] + m.samples[1]));
          delete copy.samples;
          return copy;
        });
        save("devicelab-samples.json", JSON.stringify(out), "application/json");
        return;
      }
      var cols = ["run_id", "device", "engine", "label", "model", "precision", "backend", "threads", "repeat"];
      var lines = [cols.concat(["iteration", "seconds"]).join(",")];
      meta.forEach(function (m) {
        var head = cols.map(function (c) { return csvField(m[c]); }).join(",");
        for (var k = 0; k < m.samples[1]; k++) {
          lines.push(head + "," + k + "," + all[m.samples[0] + k].toPrecision(7));
        }
      });
      save("devicelab-samples.csv", lines.join("\n") + "\n", "text/csv");
    });
  }

  document.querySelectorAll("button[data-download]").forEach(function (button) {
    button.addEventListener("click", function () {
      button.disabled = true;
      download(button.getAttribute("data-download")).finally(function () { button.disabled = false; });
    });
  });
})();
