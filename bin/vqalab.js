#!/usr/bin/env node
// The package's one CLI. The code lives in dist/ (built by `npm run build`, which `npm ci` runs).
// Everything it prints goes through the report redactor first (secrets never reach the terminal).
import { installOutputRedaction } from '../dist/src/report/redact.js';
import { main } from '../dist/src/cli/main.js';

installOutputRedaction();
main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => {
    process.stderr.write(`vqalab: ${err && err.message ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
