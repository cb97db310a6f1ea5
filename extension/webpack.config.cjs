// Merged by @jupyterlab/builder into its extension config (package.json "jupyterlab.webpackConfig").
// - Loaders and webpack's own shims (process/browser) live in the lab tree, not next to the extension.
// - plotly.js-dist-min is already a minified UMD bundle: do not parse it (nothing to rewrite) and do not
//   minify its chunk again (terser on 4.6 MB costs about a minute and gains nothing).
const path = require('path');
const TerserPlugin = require('terser-webpack-plugin');

const labTree = path.resolve(__dirname, '../test/e2e/app/node_modules');

module.exports = {
  resolve: { modules: ['node_modules', labTree] },
  resolveLoader: { modules: ['node_modules', labTree] },
  module: { noParse: /plotly\.js-dist-min[\\/]plotly\.min\.js$/ },
  optimization: {
    minimizer: [new TerserPlugin({ exclude: /plotly/ })],
  },
};
