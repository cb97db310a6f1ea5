/**
 * The widgets' CSS, one string for all three places: inlined in each text/html fallback (scoped by
 * the `vqa-` class prefix), injected once by the JupyterLab extension and once by a report page.
 * Colours come from JupyterLab's theme variables with light fallbacks, so the widgets follow the
 * light and dark themes inside Lab and still look right in nbconvert or a report.
 */
export const VQA_CSS = `
.vqa{--vqa-fg:var(--jp-ui-font-color1,#1f2328);--vqa-fg2:var(--jp-ui-font-color2,#57606a);
--vqa-bg:var(--jp-layout-color0,#fff);--vqa-bg2:var(--jp-layout-color2,#eef1f4);--vqa-bg1:var(--jp-layout-color1,#fff);
--vqa-border:var(--jp-border-color2,#d0d7de);--vqa-accent:var(--jp-brand-color1,#0969da);
--vqa-pos:var(--jp-success-color1,#1a7f37);--vqa-neg:var(--jp-error-color1,#cf222e);--vqa-warn:var(--jp-warn-color1,#9a6700);
--vqa-pos-rgb:26,127,55;--vqa-neg-rgb:207,34,46;--vqa-accent-rgb:9,105,218;
font-family:var(--jp-ui-font-family,system-ui,-apple-system,"Segoe UI",sans-serif);font-size:var(--jp-ui-font-size1,13px);
line-height:1.45;color:var(--vqa-fg);background:transparent;max-width:100%;box-sizing:border-box}
body[data-jp-theme-light="false"] .vqa,[data-theme="dark"] .vqa{--vqa-pos-rgb:63,185,80;--vqa-neg-rgb:248,81,73;--vqa-accent-rgb:88,166,255}
[data-theme="dark"] .vqa{--vqa-fg:var(--jp-ui-font-color1,#e6edf3);--vqa-fg2:var(--jp-ui-font-color2,#9198a1);--vqa-bg:var(--jp-layout-color0,#0d1117);
--vqa-bg2:var(--jp-layout-color2,#262c36);--vqa-bg1:var(--jp-layout-color1,#151b23);--vqa-border:var(--jp-border-color2,#3d444d);
--vqa-accent:var(--jp-brand-color1,#4493f8);--vqa-pos:var(--jp-success-color1,#3fb950);--vqa-neg:var(--jp-error-color1,#f85149);--vqa-warn:var(--jp-warn-color1,#d29922)}
.vqa *{box-sizing:border-box}
.vqa h3{font-size:1.1em;margin:0 0 .4em;font-weight:600}
.vqa h4{font-size:1em;margin:.6em 0 .3em;font-weight:600}
.vqa table{border-collapse:collapse;margin:.2em 0;font-variant-numeric:tabular-nums}
/* .vqa.vqa: outweighs the table rules of JupyterLab's and nbconvert's rendered-HTML styles (static fallback). */
.vqa.vqa table th,.vqa.vqa table td{border:1px solid var(--vqa-border);padding:2px 6px;text-align:left;vertical-align:top;line-height:1.45}
.vqa.vqa table th{background:var(--vqa-bg2);font-weight:600}
.vqa.vqa table td.vqa-num,.vqa.vqa table th.vqa-num{text-align:right;white-space:nowrap}
.vqa .vqa-muted{color:var(--vqa-fg2)}
.vqa .vqa-badge{display:inline-block;padding:0 .45em;border-radius:.7em;font-size:.85em;border:1px solid var(--vqa-border);background:var(--vqa-bg2);margin:0 .2em .1em 0;white-space:nowrap}
.vqa .vqa-badge.vqa-bad{border-color:var(--vqa-neg);color:var(--vqa-neg)}
.vqa .vqa-badge.vqa-good{border-color:var(--vqa-pos);color:var(--vqa-pos)}
.vqa .vqa-badge.vqa-warnb{border-color:var(--vqa-warn);color:var(--vqa-warn)}
.vqa button,.vqa select,.vqa input{font:inherit;color:var(--vqa-fg);background:var(--vqa-bg1);border:1px solid var(--vqa-border);border-radius:3px;padding:1px 6px}
.vqa button{cursor:pointer}
.vqa button:focus-visible,.vqa select:focus-visible,.vqa input:focus-visible,.vqa [tabindex]:focus-visible{outline:2px solid var(--vqa-accent);outline-offset:1px}
.vqa .vqa-error{border-left:4px solid var(--vqa-neg);padding:.4em .8em;background:rgba(var(--vqa-neg-rgb),.08)}
.vqa-error-box{border-left:4px solid var(--vqa-neg);padding:.4em .8em;background:rgba(var(--vqa-neg-rgb),.08)}
.vqa-error-box code{white-space:pre-wrap;word-break:break-word}
.vqa-sample{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.vqa-images{display:flex;flex-direction:column;gap:6px;max-width:100%}
.vqa-figure{margin:0;max-width:100%}
.vqa-figure img{display:block;max-width:100%;height:auto;border:1px solid var(--vqa-border)}
.vqa img.vqa-px{image-rendering:pixelated}
.vqa-figure figcaption{font-size:.85em;color:var(--vqa-fg2)}
.vqa-zoom{padding:0 !important;border:0 !important;background:none !important;cursor:zoom-in;display:block}
.vqa-zoomed{overflow:auto;max-width:100%;max-height:80vh}
.vqa-zoomed .vqa-zoom{cursor:zoom-out}
.vqa-zoomed img{max-width:none !important;image-rendering:pixelated}
.vqa-sample-body{flex:1 1 280px;min-width:240px}
.vqa-question{font-size:1.15em;font-weight:600;margin:.1em 0 .5em}
.vqa-answers td.vqa-bar{min-width:90px}
.vqa-bar span{display:inline-block;height:.7em;background:var(--vqa-accent);opacity:.55;vertical-align:middle}
.vqa-answers tr.vqa-match td{background:rgba(var(--vqa-pos-rgb),.15)}
.vqa-prediction{margin:.5em 0}
.vqa-prediction q{font-weight:600}
.vqa-parts{font-size:.9em;color:var(--vqa-fg2)}
.vqa-group-head{display:flex;gap:10px;align-items:flex-start;margin-bottom:.4em}
.vqa-group-head img{border:1px solid var(--vqa-border)}
.vqa-completions td.vqa-text{max-width:60ch;white-space:pre-wrap;word-break:break-word}
.vqa-adv{position:relative;width:120px;height:1em;background:var(--vqa-bg2)}
.vqa-adv::before{content:"";position:absolute;left:50%;top:0;bottom:0;border-left:1px solid var(--vqa-fg2)}
.vqa-adv span{position:absolute;top:2px;bottom:2px}
.vqa-adv span.vqa-pos{left:50%;background:var(--vqa-pos)}
.vqa-adv span.vqa-neg{right:50%;background:var(--vqa-neg)}
.vqa-tok{border-radius:2px}
.vqa-tip{position:fixed;z-index:10000;pointer-events:none;background:var(--vqa-bg1);color:var(--vqa-fg);border:1px solid var(--vqa-border);padding:2px 6px;font-size:12px;border-radius:3px;box-shadow:0 1px 4px rgba(0,0,0,.25);white-space:pre}
.vqa-rewards-table tr.vqa-disagree td{background:rgba(var(--vqa-neg-rgb),.10)}
.vqa-rewards-table tr.vqa-disagree td.vqa-dis{font-weight:700;color:var(--vqa-neg)}
.vqa-rewards-table td.vqa-text{max-width:40ch;white-space:pre-wrap;word-break:break-word}
.vqa th button.vqa-sort{border:0;background:none;padding:0;font-weight:600}
.vqa th[aria-sort="ascending"] button.vqa-sort::after{content:" ▲"}
.vqa th[aria-sort="descending"] button.vqa-sort::after{content:" ▼"}
.vqa-controls{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin:.3em 0}
.vqa-progress{display:flex;align-items:center;gap:10px;margin:.2em 0 .5em}
.vqa-progress-bar{flex:0 1 320px;height:10px;background:var(--vqa-bg2);border:1px solid var(--vqa-border);border-radius:5px;overflow:hidden}
.vqa-progress-bar span{display:block;height:100%;background:var(--vqa-accent)}
.vqa-progress.vqa-status-done .vqa-progress-bar span{background:var(--vqa-pos)}
.vqa-progress.vqa-status-error .vqa-progress-bar span,.vqa-progress.vqa-status-stopped .vqa-progress-bar span{background:var(--vqa-neg)}
.vqa-charts{display:flex;flex-wrap:wrap;gap:8px}
.vqa-chart{border:1px solid var(--vqa-border);background:var(--vqa-bg1)}
.vqa-chart text{fill:var(--vqa-fg2);font-size:10px}
.vqa-chart .vqa-chart-title{fill:var(--vqa-fg);font-size:11px;font-weight:600}
.vqa-chart .vqa-grid{stroke:var(--vqa-border);stroke-width:1}
.vqa-plot{width:100%;min-height:200px}
.vqa-legend{display:flex;gap:12px;flex-wrap:wrap;font-size:.9em}
.vqa-legend i{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:4px}
.vqa-latest{margin-top:.6em;border-top:1px solid var(--vqa-border);padding-top:.4em}
.vqa-grid-cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:8px;margin:.4em 0}
.vqa-card{border:1px solid var(--vqa-border);border-radius:4px;padding:4px;background:var(--vqa-bg1);text-align:left;display:block;width:100%}
.vqa-card .vqa-thumb{height:110px;display:flex;align-items:center;justify-content:center;background:var(--vqa-bg2)}
.vqa-card img{max-width:100%;max-height:110px;display:block}
.vqa-card .vqa-card-q{font-weight:600;margin:.2em 0;overflow-wrap:anywhere}
.vqa-card[aria-pressed="true"]{outline:2px solid var(--vqa-accent)}
.vqa-typecounts{display:flex;flex-wrap:wrap;gap:4px;margin:.2em 0}
.vqa-detail{margin-top:.5em;border-top:1px solid var(--vqa-border);padding-top:.5em}
.vqa-hidden{display:none !important}
`;
