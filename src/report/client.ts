// The script that runs inside the report: it reads the ChartSpecs embedded as JSON (see charts.ts) and
// draws them with the inlined Chart.js. Plain ES5-style JS in a string so it needs no bundler; it must
// not contain "</script" or a backtick.

export const CLIENT_SCRIPT = String.raw`(function () {
  "use strict";
  var el = document.getElementById("chart-specs");
  var specs = el ? JSON.parse(el.textContent || "[]") : [];
  Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
  Chart.defaults.color = "#475569";

  function fmt(v, f) {
    if (v === null || v === undefined || !isFinite(v)) return "";
    if (f === "percent") {
      var p = v * 100;
      return (Math.abs(p - Math.round(p)) < 1e-9 ? p.toFixed(0) : p.toFixed(1)) + "%";
    }
    var a = Math.abs(v);
    if (a !== 0 && (a < 0.001 || a >= 1e6)) return v.toExponential(2);
    return String(Math.round(v * 1000) / 1000);
  }

  // Text with a translucent white box behind it, so labels stay readable over lines and bars.
  function boxedText(ctx, text, x, y, align, baseline, color) {
    ctx.font = "600 11px " + Chart.defaults.font.family;
    var w = ctx.measureText(text).width, h = 14, pad = 3;
    var left = align === "right" ? x - w : x;
    var top = baseline === "bottom" ? y - h : y;
    ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
    ctx.fillRect(left - pad, top - 1, w + 2 * pad, h + 2);
    ctx.fillStyle = color;
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillText(text, left, top + 1);
  }

  function annotationPlugin(lines) {
    return {
      id: "annotations",
      afterDatasetsDraw: function (chart) {
        var ctx = chart.ctx, area = chart.chartArea;
        lines.forEach(function (ln, i) {
          var scale = chart.scales[ln.axis];
          if (!scale) return;
          var px = scale.getPixelForValue(ln.value);
          if (!isFinite(px)) return;
          var vertical = ln.axis === "x";
          if (vertical ? (px < area.left - 1 || px > area.right + 1) : (px < area.top - 1 || px > area.bottom + 1)) return;
          ctx.save();
          ctx.strokeStyle = ln.color;
          ctx.lineWidth = 1.5;
          ctx.setLineDash([6, 4]);
          ctx.beginPath();
          if (vertical) { ctx.moveTo(px, area.top); ctx.lineTo(px, area.bottom); }
          else { ctx.moveTo(area.left, px); ctx.lineTo(area.right, px); }
          ctx.stroke();
          ctx.setLineDash([]);
          ctx.font = "600 11px " + Chart.defaults.font.family;
          var w = ctx.measureText(ln.label).width;
          if (vertical) {
            // Stagger the labels of nearby lines (pruning drop points).
            var right = px + 6 + w < area.right;
            var y = ln.labelAt === "bottom" ? area.bottom - 22 - 18 * (i % 4) : area.top + 6 + 18 * (i % 4);
            boxedText(ctx, ln.label, right ? px + 5 : px - 5, y, right ? "left" : "right", "top", ln.color);
          } else {
            boxedText(ctx, ln.label, area.right - 6, px - 3, "right", "bottom", ln.color);
          }
          ctx.restore();
        });
        chart.data.datasets.forEach(function (ds, di) {
          if (!ds.pointLabels || !chart.isDatasetVisible(di)) return;
          var meta = chart.getDatasetMeta(di);
          ctx.save();
          meta.data.forEach(function (pt, j) {
            var text = ds.pointLabels[j];
            if (!text || pt.skip) return;
            ctx.font = "600 11px " + Chart.defaults.font.family;
            var w = ctx.measureText(text).width;
            var right = pt.x + 10 + w < area.right;
            boxedText(ctx, text, right ? pt.x + 9 : pt.x - 9, pt.y - 7, right ? "left" : "right", "top", ds.backgroundColor);
          });
          ctx.restore();
        });
      }
    };
  }

  function axis(a) {
    var o = {
      type: a.type,
      title: { display: !!a.title, text: a.title, color: "#334155", font: { weight: "600" } },
      grid: { color: "#e2e8f0", display: a.type !== "category" },
      ticks: { color: "#475569", maxRotation: 0, autoSkip: true }
    };
    if (a.min !== undefined) o.min = a.min;
    if (a.max !== undefined) o.max = a.max;
    if (a.beginAtZero) o.beginAtZero = true;
    if (a.suggestedMax !== undefined) o.suggestedMax = a.suggestedMax;
    if (a.grace) o.grace = a.grace;
    if (a.offset !== undefined) o.offset = a.offset;
    if (a.type === "linear") {
      o.ticks.callback = function (v) { return fmt(v, a.format); };
      o.ticks.includeBounds = false; // no odd end ticks such as "1.696" on data-fitted axes
    }
    if (a.hideTicks) o.ticks.display = false;
    return o;
  }

  specs.forEach(function (s) {
    var canvas = document.getElementById(s.id);
    if (!canvas) return;
    new Chart(canvas, {
      type: s.type,
      data: { labels: s.labels, datasets: s.datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: s.interaction, intersect: false, axis: "x" },
        scales: { x: axis(s.x), y: axis(s.y) },
        plugins: {
          legend: {
            display: s.legend,
            position: "bottom",
            labels: {
              usePointStyle: true, boxWidth: 8, boxHeight: 8, color: "#334155", padding: 16,
              filter: function (item, data) { return !data.datasets[item.datasetIndex].hideInLegend; },
              sort: function (a, b) { return a.datasetIndex - b.datasetIndex; }
            }
          },
          tooltip: {
            callbacks: {
              title: function (items) {
                if (!items.length) return "";
                var it = items[0];
                if (s.titles) return s.titles[it.dataIndex] || "";
                return s.x.title + ": " + fmt(it.parsed.x, s.x.format);
              },
              label: function (it) { return it.dataset.label + ": " + fmt(it.parsed.y, s.y.format); },
              afterLabel: function (it) {
                var n = it.dataset.notes;
                return n ? n[it.dataIndex] || "" : "";
              }
            }
          }
        }
      },
      plugins: [annotationPlugin(s.refLines || [])]
    });
  });
})();
`;
