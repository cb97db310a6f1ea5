/** The vqalab runtime: what a notebook cell or a script imports. Knows nothing about Jupyter. */
export * as validate from './util/validate.js';
export * as engine from './engine/index.js';
