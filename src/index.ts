/** The vqalab runtime: what a notebook cell or a script imports. Knows nothing about Jupyter. */
export * as validate from './util/validate.js';
export * as display from './display/index.js';
export { show, plot, browse, dashboard } from './display/index.js';
