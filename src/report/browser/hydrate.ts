/// <reference lib="dom" />
/**
 * The report page's own script (a classic script, inlined as compiled; no imports, no globals):
 * draws plotly outputs (`application/vnd.plotly.v1+json`) with the inlined plotly.js, tells the
 * vqalab widgets which theme the page is in, offers the embedded source notebook for download,
 * and marks the page hydrated (`<html data-hydrated="true">`) once everything is drawn. The vqalab
 * widgets themselves are hydrated by the display renderers' page script (src/display/assets.ts),
 * which runs before this one.
 */
(() => {
  const w = window as unknown as { Plotly?: any; vqalab?: { mounted?: unknown[] } };

  function showError(el: HTMLElement, message: string): void {
    const box = document.createElement('div');
    box.className = 'vq-render-error';
    box.setAttribute('role', 'alert');
    box.textContent = message;
    el.prepend(box);
  }

  async function drawPlots(): Promise<void> {
    for (const el of Array.from(document.querySelectorAll<HTMLElement>('.vq-plotly'))) {
      if (!w.Plotly) {
        showError(el, 'plotly.js is not in this report; showing the fallback.');
        continue;
      }
      try {
        const spec = JSON.parse(el.querySelector(':scope > script.vq-payload')?.textContent ?? '{}');
        const target = el.querySelector<HTMLElement>('.vq-plot')!;
        await w.Plotly.newPlot(target, spec.data ?? [], { autosize: true, ...(spec.layout ?? {}) }, { responsive: true, displaylogo: false, ...(spec.config ?? {}) });
        el.classList.add('vq-rendered');
        el.querySelector('.vq-fallback')?.remove();
      } catch (err) {
        showError(el, `Could not draw this plot: ${(err as Error).message}`);
      }
    }
  }

  function offerNotebook(): void {
    const link = document.getElementById('vq-download-notebook') as HTMLAnchorElement | null;
    const data = document.getElementById('vqalab-report');
    if (!link || !data) return;
    const report = JSON.parse(data.textContent ?? '{}');
    link.href = URL.createObjectURL(new Blob([JSON.stringify(report.source?.notebook ?? {}, null, 1)], { type: 'application/x-ipynb+json' }));
  }

  async function main(): Promise<void> {
    const dark = window.matchMedia?.('(prefers-color-scheme: dark)').matches ?? false;
    document.body.dataset.jpThemeLight = String(!dark); // the widgets' dark palette keys on this
    offerNotebook();
    await drawPlots();
    document.documentElement.dataset.hydrated = 'true';
  }

  const start = () => { main().catch((err) => console.error('vqalab report:', err)); };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
