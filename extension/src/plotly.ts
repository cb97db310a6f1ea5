/**
 * plotly.js, loaded once and only when a metrics widget first needs it (it is large). The
 * JupyterLab extension loads it as a lazy chunk; a report page provides the copy it inlines.
 */

/** The part of plotly.js we use. */
export interface PlotlyLike {
  react(el: HTMLElement, data: object[], layout: object, config?: object): Promise<unknown>;
  purge(el: HTMLElement): void;
  Plots: { resize(el: HTMLElement): unknown };
}

namespace Private {
  export let loader: (() => Promise<PlotlyLike>) | undefined;
  export let promise: Promise<PlotlyLike> | undefined;
}

/** Set how plotly is obtained (before the first metrics widget renders). */
export function setPlotlyLoader(loader: () => Promise<PlotlyLike>): void {
  Private.loader = loader;
  Private.promise = undefined;
}

/** plotly.js, loaded on first call and cached; rejects when no loader is set or loading fails (a retry is allowed). */
export function ensurePlotly(): Promise<PlotlyLike> {
  if (!Private.promise) {
    const loader = Private.loader;
    Private.promise = loader
      ? loader().catch((err: unknown) => {
          Private.promise = undefined;
          throw err;
        })
      : Promise.reject(new Error('no plotly.js on this page'));
  }
  return Private.promise;
}
