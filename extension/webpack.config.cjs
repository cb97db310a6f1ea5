// Merged by @jupyterlab/builder into its extension config (package.json "jupyterlab.webpackConfig").
// - Loaders and webpack's own shims (process/browser) live in the lab tree, not next to the extension.
// - plotly.js-basic-dist-min (the partial bundle: scatter, bar, pie) is already a minified UMD bundle: do not parse it (nothing to rewrite) and do not
//   minify its chunk again (terser on it costs tens of seconds and gains nothing).
const path = require('path');
const TerserPlugin = require('terser-webpack-plugin');

const labTree = path.resolve(__dirname, '../test/e2e/app/node_modules');

module.exports = {
  resolve: { modules: ['node_modules', labTree] },
  resolveLoader: { modules: ['node_modules', labTree] },
  module: { noParse: /plotly\.js-basic-dist-min[\\/]plotly-basic\.min\.js$/ },
  optimization: {
    minimizer: [new TerserPlugin({ exclude: /plotly/ })],
  },
};
