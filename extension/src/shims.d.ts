// plotly.js-basic-dist-min ships no types; the extension uses the few calls described in plotly.ts.
declare module 'plotly.js-basic-dist-min';
