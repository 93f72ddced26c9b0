"""The page's inline style sheet and its few lines of script, and the policy that allows only them.

Colours are chosen for WCAG AA contrast on white (each pair is 4.5:1 or more; the
browser test measures them); every colour also has a word or a mark beside it. The
script only opens frames (a ladder arrow followed, "open every frame", printing); the
page reads the same without it.
"""

from __future__ import annotations

import base64
import hashlib

CSS = """
:root{--ink:#1a1a1a;--muted:#4a4a4a;--paper:#fff;--rule:#c4c4c4;--lane:#767676;
--hs:#1f4e99;--rec:#1b6e35;--alert:#a4161a;--close:#595959;--ku:#6b3fa0;--seed:#b00020;
--secret-bg:#fff4d6;--secret-ink:#5c3c00;--link:#0b57d0;--head:#eef0f3;--note-bg:#f4f6fb}
*{box-sizing:border-box}
html{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif;
line-height:1.5;color:var(--ink);background:var(--paper)}
body{margin:0 auto;max-width:78rem;padding:1rem 1.25rem 4rem}
code,pre,.hex{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.88em}
pre{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}
a{color:var(--link)}
a:focus-visible,summary:focus-visible,button:focus-visible,.scroll:focus-visible{
outline:3px solid var(--link);outline-offset:2px}
h1{font-size:1.6rem;margin:.4rem 0 .2rem}
h2{font-size:1.3rem;margin:2rem 0 .5rem;border-bottom:2px solid var(--rule)}
h3{font-size:1.05rem;margin:1rem 0 .3rem}
h4{font-size:1rem;margin:.75rem 0 .25rem}
.source{color:var(--muted);margin:0}
.banner{border:2px solid;padding:.5rem .75rem;margin:.6rem 0;border-radius:.3rem}
.banner.seeded{border-color:var(--seed);color:var(--seed);font-weight:600}
.banner.secrets{border-color:var(--secret-ink);background:var(--secret-bg);color:var(--secret-ink)}
.banner.lesson{border-color:var(--hs);background:var(--note-bg)}
.note{background:var(--note-bg);border-left:4px solid var(--hs);padding:.4rem .7rem;margin:.5rem 0}
.badge{display:inline-block;font-size:.72rem;font-weight:700;letter-spacing:.03em;
text-transform:uppercase;padding:0 .35rem;border-radius:.25rem;margin-left:.3rem;
vertical-align:middle;line-height:1.4}
.badge.seeded{background:var(--seed);color:#fff}
.badge.secret{background:var(--secret-ink);color:#fff}
.badge.yes{background:var(--rec);color:#fff}
.badge.no{background:var(--alert);color:#fff}
.badge.partly{background:var(--close);color:#fff}
nav.toc ol{margin:.3rem 0;padding-left:1.4rem;columns:2 16rem}
#tools{margin:.5rem 0}
button{font:inherit;padding:.2rem .7rem;border:1px solid var(--lane);background:var(--head);
color:var(--ink);border-radius:.25rem;cursor:pointer}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem;margin:.3rem 0}
dl.facts dt{font-weight:600}
dl.facts dd{margin:0;overflow-wrap:anywhere}
.lanes{display:grid;position:sticky;top:0;background:var(--paper);z-index:1;
border-bottom:1px solid var(--rule);font-weight:600;text-align:center;padding:.3rem 0}
.lanes.two{grid-template-columns:25% 50% 25%}
.lanes.three{grid-template-columns:25% 12.5% 25% 12.5% 25%}
.lanes .lane{overflow-wrap:anywhere}
.lanes.two .lane:nth-child(2){grid-column:3}
.lanes.three .lane:nth-child(2){grid-column:3}
.lanes.three .lane:nth-child(3){grid-column:5}
ol.ladder{list-style:none;margin:0;padding:.5rem 0 1rem}
ol.ladder.two{background:linear-gradient(var(--lane),var(--lane)) 12.5% 0/2px 100% no-repeat,
linear-gradient(var(--lane),var(--lane)) 87.5% 0/2px 100% no-repeat}
ol.ladder.three{background:linear-gradient(var(--lane),var(--lane)) 12.5% 0/2px 100% no-repeat,
linear-gradient(var(--lane),var(--lane)) 50% 0/2px 100% no-repeat,
linear-gradient(var(--lane),var(--lane)) 87.5% 0/2px 100% no-repeat}
.arrow{margin:.15rem 0}
.arrow a{display:block;position:relative;text-decoration:none;color:inherit;text-align:center;
border-bottom:3px solid currentColor;padding:.05rem .9rem 0;font-size:.9rem}
.arrow a:hover .label,.arrow a:focus .label{text-decoration:underline}
.arrow a::after,.arrow.both a::before{content:"";position:absolute;bottom:-8px;
border-top:6.5px solid transparent;border-bottom:6.5px solid transparent}
.arrow.ltr a::after{right:-1px;border-left:11px solid currentColor}
.arrow.rtl a::after{left:-1px;border-right:11px solid currentColor}
.arrow.both a::after{right:-1px;border-left:11px solid currentColor}
.arrow.both a::before{left:-1px;border-right:11px solid currentColor}
.arrow.group a{border-bottom-style:dashed}
.arrow .time{white-space:nowrap}
.two .span-01 a,.three .span-02 a{margin-left:12.5%;width:75%}
.three .span-01 a{margin-left:12.5%;width:37.5%}
.three .span-12 a{margin-left:50%;width:37.5%}
.arrow .num{font-weight:700}
.arrow .time{color:var(--muted)}
.kind-handshake{color:var(--hs)}
.kind-record{color:var(--rec)}
.kind-alert,.kind-unknown{color:var(--alert)}
.kind-alert a{border-bottom-style:double;border-bottom-width:5px}
.kind-close{color:var(--close)}
.kind-key_update{color:var(--ku)}
details.frame{border:1px solid var(--rule);border-left:6px solid currentColor;margin:.45rem 0;
border-radius:.25rem}
details.frame>summary{cursor:pointer;padding:.35rem .6rem}
details.frame>summary h3{display:inline;font-size:1rem;margin:0;color:var(--ink)}
details.frame .body{padding:.2rem .75rem .75rem;color:var(--ink)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.3rem 0}
table.nonce{width:auto}
caption{text-align:left;font-weight:600;padding:.2rem 0}
th,td{border-bottom:1px solid var(--rule);padding:.25rem .45rem;text-align:left;vertical-align:top}
thead th{background:var(--head)}
tbody th{font-weight:600}
td.hex{white-space:pre;font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;
font-size:.85rem}
td.num{text-align:right;white-space:nowrap}
tr.seeded>td:first-child,tr.seeded>th:first-child{box-shadow:inset 5px 0 var(--seed)}
.secret-value{background:var(--secret-bg);color:var(--secret-ink);outline:1px dashed var(--secret-ink)}
.hidden-value{color:var(--muted);font-style:italic}
.diagnosis{color:var(--alert);font-weight:600}
ol.schedule{list-style:none;padding:0}
li.derivation{border:1px solid var(--rule);border-radius:.25rem;padding:.3rem .7rem;margin:.4rem 0}
li.derivation.seeded{box-shadow:inset 5px 0 var(--seed)}
li.derivation .formula{margin:.1rem 0 .2rem}
li.derivation .name{font-weight:700;font-size:1rem}
code.hex{overflow-wrap:anywhere}
ul.claims{list-style:none;padding:0}
ul.claims li{margin:.4rem 0}
.vh{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
footer{margin-top:3rem;color:var(--muted);font-size:.85rem;border-top:1px solid var(--rule)}
@media print{
body{max-width:none;padding:0}
#tools,.back{display:none}
.lanes{position:static}
details.frame{break-inside:avoid}
details::details-content{content-visibility:visible;display:block}
a{color:inherit;text-decoration:none}
ol.ladder,.badge,.secret-value{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""

SCRIPT = """
(function () {
  "use strict";
  var all = Array.prototype.slice.call(document.querySelectorAll("details"));
  function reveal(id) {
    var target = id && document.getElementById(id);
    if (target && target.tagName === "DETAILS") { target.open = true; }
  }
  window.addEventListener("hashchange", function () { reveal(location.hash.slice(1)); });
  reveal(location.hash.slice(1));
  document.querySelectorAll("ol.ladder a, a.to-frame").forEach(function (a) {
    a.addEventListener("click", function () { reveal(a.getAttribute("href").slice(1)); });
  });
  var tools = document.getElementById("tools");
  if (tools) {
    tools.hidden = false;
    tools.querySelector("[data-open]").addEventListener("click", function () {
      all.forEach(function (d) { d.open = true; });
    });
    tools.querySelector("[data-close]").addEventListener("click", function () {
      all.forEach(function (d) { d.open = false; });
    });
  }
  var before = [];
  window.addEventListener("beforeprint", function () {
    before = all.map(function (d) { var was = d.open; d.open = true; return was; });
  });
  window.addEventListener("afterprint", function () {
    all.forEach(function (d, i) { d.open = before[i]; });
  });
})();
"""


def _digest(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"style-src 'sha256-{_digest(CSS)}'; "
    f"script-src 'sha256-{_digest(SCRIPT)}'; "
    "img-src 'none'; base-uri 'none'; form-action 'none'"
)
"""Nothing but this style sheet and this script: no request can leave the page, and no
markup that slipped into it could run or load anything."""
